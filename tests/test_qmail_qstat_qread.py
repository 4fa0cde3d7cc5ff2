"""qmail-qstat and qmail-qread output formats (spec/admin-tools.md §2-3)."""
import os
import subprocess
import calendar

from conftest import uid


def put(home, path, data: bytes, owner="qmails", mtime=None):
    full = os.path.join(home, "queue", path)
    with open(full, "wb") as f:
        f.write(data)
    os.chown(full, uid(owner), -1)
    if mtime is not None:
        os.utime(full, (mtime, mtime))


def test_qstat_counts(fresh_home):
    put(fresh_home, "mess/0/23", b"a", "qmailq")
    put(fresh_home, "mess/1/24", b"b", "qmailq")
    put(fresh_home, "mess/1/47", b"c", "qmailq")
    put(fresh_home, "todo/47", b"u0\0", "qmailq")
    done = subprocess.run([os.path.join(fresh_home, "bin", "qmail-qstat")], capture_output=True)
    assert (done.returncode, done.stdout) == (0, b"messages in queue: 3\n"
                                              b"messages in queue but not yet preprocessed: 1\n")


def test_qread_format(fresh_home):
    t = calendar.timegm((2024, 3, 5, 9, 7, 1))
    put(fresh_home, "mess/20/457", b"x" * 321, "qmailq")
    put(fresh_home, "info/20/457", b"Fjoe@example.org\0", mtime=t)
    put(fresh_home, "local/20/457", b"Tmary@here\0Dbob@here\0Xodd\0Tunterminated")
    put(fresh_home, "remote/20/457", b"Tfar@away\x01.example\0")
    put(fresh_home, "mess/0/23", b"y", "qmailq")
    put(fresh_home, "info/0/23", b"F\0", mtime=t + 86400 * 30)
    put(fresh_home, "bounce/23", b"<x>:\n")
    put(fresh_home, "info/0/46", b"F\0")   # mess missing: trouble
    done = subprocess.run([os.path.join(fresh_home, "bin", "qmail-qread")], capture_output=True)
    assert done.returncode == 0
    first = b"4 Apr 2024 09:07:01 GMT  #23  1  <>  bouncing\n"
    trouble = b"warning: trouble with #46: file does not exist\n"
    last = (b"5 Mar 2024 09:07:01 GMT  #457  321  <joe@example.org> \n"
            b"\tlocal\tmary@here\n"
            b"  done\tlocal\tbob@here\n"
            b"\tremote\tfar@away_.example\n")
    # info/0 holds 23 and 46 in readdir order; info/20 comes after info/0
    assert done.stdout in (first + trouble + last, trouble + first + last)


def test_qread_local_trouble_still_lists_remote(fresh_home):
    """qmail-qread.c: an open failure of local/N/ID warns and goes on to
    remote/N/ID (spec/admin-tools.md §3)."""
    t = calendar.timegm((2024, 3, 5, 9, 7, 1))
    put(fresh_home, "mess/20/457", b"x" * 5, "qmailq")
    put(fresh_home, "info/20/457", b"Fa@b\0", mtime=t)
    os.symlink("457", os.path.join(fresh_home, "queue", "local", "20", "457"))  # ELOOP
    put(fresh_home, "remote/20/457", b"Tfar@away\0")
    done = subprocess.run([os.path.join(fresh_home, "bin", "qmail-qread")], capture_output=True)
    assert (done.returncode, done.stdout) == (0, b"5 Mar 2024 09:07:01 GMT  #457  5  <a@b> \n"
                                              b"warning: trouble with #457: symbolic link loop\n"
                                              b"\tremote\tfar@away\n")


def test_qread_names_files_by_the_id(fresh_home):
    """The ID is the number in the name; every file name is made from it
    (fmtqfn), so `0457` in info/20 is message #457 and an entry in the wrong
    split directory is looked for where it belongs (spec/queue.md §1)."""
    t = calendar.timegm((2024, 3, 5, 9, 7, 1))
    put(fresh_home, "mess/20/457", b"x" * 5, "qmailq")
    put(fresh_home, "info/20/457", b"Fa@b\0", mtime=t)
    put(fresh_home, "info/20/0457", b"Fwrong@b\0", mtime=t)
    put(fresh_home, "info/3/26", b"Fother@b\0", mtime=t)       # in place; no mess: trouble
    put(fresh_home, "info/3/457", b"Fmisplaced@b\0", mtime=t)  # 457 belongs in info/20
    done = subprocess.run([os.path.join(fresh_home, "bin", "qmail-qread")], capture_output=True)
    line = b"5 Mar 2024 09:07:01 GMT  #457  5  <a@b> \n"
    assert done.returncode == 0
    assert sorted(done.stdout.splitlines(keepends=True)) == sorted([
        b"warning: trouble with #26: file does not exist\n", line, line, line])


def test_closed_stdout_kills_quietly(fresh_home):
    """`qmail-qread | head` and `qmail-qstat | true`: qmail's programs die of
    SIGPIPE; no traceback, no 'trouble' line for a failed write."""
    import signal
    put(fresh_home, "mess/20/457", b"x", "qmailq")
    put(fresh_home, "info/20/457", b"Fa@b\0")
    for program in ("qmail-qread", "qmail-qstat"):
        r, w = os.pipe()
        os.close(r)
        try:
            done = subprocess.run([os.path.join(fresh_home, "bin", program)], stdout=w,
                                  stderr=subprocess.PIPE)
        finally:
            os.close(w)
        assert (done.returncode, done.stderr) == (-signal.SIGPIPE, b""), program
