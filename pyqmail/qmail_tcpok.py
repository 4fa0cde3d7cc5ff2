"""qmail-tcpok: forget every recorded timeout (spec/admin-tools.md §4):
1024 zero bytes over queue/lock/tcpto, and over pyqmail's queue/lock/tcpto6
when it exists."""
import errno
import fcntl
import os
import sys

from pyqmail import auto, errors, tcpto
from pyqmail.errors import Temporary

PROGRAM = b"qmail-tcpok"


def clear(name: bytes, missing_ok: bool) -> None:
    path = auto.QMAIL_HOME + b"/queue/lock/" + name
    try:
        fd = os.open(name, os.O_WRONLY)
    except OSError as e:
        if missing_ok and e.errno == errno.ENOENT:
            return
        raise Temporary(b"unable to write %s: %s" % (path, errors.error_str(e))) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            raise Temporary(b"unable to lock %s: %s" % (path, errors.error_str(e))) from None
        try:
            data = b"\0" * tcpto.SIZE
            while data:
                data = data[os.write(fd, data):]
        except OSError as e:
            raise Temporary(b"unable to clear %s: %s" % (path, errors.error_str(e))) from None
    finally:
        os.close(fd)


def run(argv: list[bytes]) -> int:
    """qmail-tcpok's main(); the exit code."""
    try:
        try:
            os.chdir(auto.QMAIL_HOME)
        except OSError as e:
            raise Temporary(b"unable to chdir to %s: %s"
                            % (auto.QMAIL_HOME, errors.error_str(e))) from None
        try:
            os.chdir(b"queue/lock")
        except OSError as e:
            raise Temporary(b"unable to chdir to %s/queue/lock: %s"
                            % (auto.QMAIL_HOME, errors.error_str(e))) from None
        clear(b"tcpto", False)
        clear(b"tcpto6", True)
    except Temporary as e:
        return errors.die(PROGRAM, e)
    return 0


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv]))
