"""Reading a maildir as qmail's own readers do (maildir.c; spec/maildir-mbox.md
§3): clean tmp/ by the 36-hour rule, scan new/ (and cur/), skip dot files and
files from the current second, order by mtime."""
import os
import time

from pyqmail import errors

CLEAN_AGE = 129600


class ScanError(OSError):
    """A subdirectory could not be read: `unable to scan $MAILDIR/SUB: ERR`."""

    def __init__(self, subdir: bytes, error: OSError):
        super().__init__(error.errno, error.strerror, subdir)
        self.text = b"unable to scan $MAILDIR/%s: %s" % (subdir, errors.error_str(error))


def clean_tmp() -> None:
    """Remove tmp/ files not accessed for 36 hours (cwd = the maildir);
    maildir_clean() leaves dot files alone and compares whole seconds."""
    now = int(time.time())
    try:
        names = os.listdir(b"tmp")
    except OSError:
        return
    for name in names:
        if name.startswith(b"."):
            continue
        path = b"tmp/" + name
        try:
            if now > int(os.stat(path).st_atime) + CLEAN_AGE:
                os.unlink(path)
        except OSError:
            pass


def scan(subdirs: tuple[bytes, ...]) -> list[tuple[float, bytes]]:
    """(mtime, path) of the messages in subdirs, oldest first; ScanError if a
    directory cannot be read."""
    now = int(time.time())
    found = []
    for sub in subdirs:
        try:
            names = os.listdir(sub)
        except OSError as e:
            raise ScanError(sub, e) from None
        for name in names:
            if name.startswith(b"."):
                continue
            path = sub + b"/" + name
            try:
                st = os.stat(path)
            except OSError:
                continue
            if int(st.st_mtime) >= now:
                continue
            found.append((st.st_mtime, path))
    found.sort()
    return found
