"""errors.py: qmail's errno wording and temporary/permanent split."""
import errno
import os

from pyqmail import errors


def test_error_str_uses_qmail_wording():
    assert errors.error_str(errno.ENOENT) == b"file does not exist"
    assert errors.error_str(OSError(errno.ENOSPC, "x")) == b"out of disk space"
    assert errors.error_str(errno.EACCES) == b"access denied"
    assert errors.error_str(errno.ECONNREFUSED) == b"connection refused"
    assert errors.error_str(4095) == b"error 4095"


def test_error_temp_list():
    for e in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ECONNREFUSED, errno.EAGAIN):
        assert errors.is_temporary(e)
    for e in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR):
        assert not errors.is_temporary(e)


def test_from_oserror_picks_the_kind():
    f = errors.from_oserror(OSError(errno.ENOSPC, "x"), b"Unable to write")
    assert isinstance(f, errors.Temporary) and f.code == 111
    assert f.text == b"Unable to write: out of disk space"
    f = errors.from_oserror(OSError(errno.EACCES, "x"), b"Unable to open")
    assert isinstance(f, errors.Permanent) and f.code == 100


def test_report_and_die_write_one_line():
    r, w = os.pipe()
    assert errors.report(w, errors.Permanent(b"Sorry, no mailbox here by that name. (#5.1.1)")) == 100
    assert errors.report(w, errors.Temporary(b"x"), 111) == 111
    assert errors.note_bug(w) == 111
    os.close(w)
    assert os.read(r, 1000) == (b"Sorry, no mailbox here by that name. (#5.1.1)\nx\n"
                                + errors.BUG_TEXT + b"\n")
