"""qmail-clean: unlink queue files for qmail-send (spec/queue.md §6-7).

Requests on fd 0, each NUL-terminated: `foop/ID` removes intd/ID then mess/N/ID;
`todo/ID` removes intd/ID then todo/ID.  One reply byte each on fd 1: `+` done,
`!` an unlink failed (other than ENOENT), `x` malformed.  Stale pid/ files
(atime 36 hours old) are removed at start and before every 31st request.
"""
import os
import signal
import sys
import time

from pyqmail import auto

OSSIFIED = 129600  # 36 hours (§7)
REQUEST_MAX = 100


def clean_pid_dir() -> None:
    """Unlink pid/ entries whose atime is 36 hours old; errors ignored."""
    now = time.time()
    try:
        names = os.listdir(b"pid")
    except OSError:
        return
    for name in names:
        path = b"pid/" + name
        try:
            if now >= os.stat(path).st_atime + OSSIFIED:
                os.unlink(path)
        except OSError:
            pass


def unlink_ok(path: bytes) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def leading_id(request: bytes) -> bytes:
    end = 5
    while end < len(request) and 48 <= request[end] <= 57:
        end += 1
    return request[5:end]


def answer(request: bytes, split: int) -> bytes:
    """The reply byte for one request (without its NUL)."""
    if not 6 <= len(request) <= REQUEST_MAX - 1:
        return b"x"
    ident = leading_id(request)
    if not ident:
        return b"x"
    number = int(ident)
    if request.startswith(b"foop/"):
        second = b"mess/%d/%d" % (number % split, number)
    elif request.startswith(b"todo"):
        second = b"todo/%d" % number
    else:
        return b"x"
    if not unlink_ok(b"intd/%d" % number):
        return b"!"
    if not unlink_ok(second):
        return b"!"
    return b"+"


def serve(in_fd: int, out_fd: int, split: int) -> int:
    buf = b""
    count = 0
    while True:
        if count % 31 == 0:
            clean_pid_dir()
        while b"\0" not in buf:
            try:
                chunk = os.read(in_fd, 256)
            except OSError:
                return 0
            if not chunk:
                return 0
            buf += chunk
            if len(buf) > REQUEST_MAX and b"\0" not in buf:
                buf = b"\xff" * REQUEST_MAX  # bounded; the request stays malformed
        request, buf = buf.split(b"\0", 1)
        count += 1
        try:
            os.write(out_fd, answer(request, split))
        except OSError:
            return 100


def run(qmail_home: bytes, split: int = auto.SPLIT) -> int:
    try:
        os.chdir(qmail_home)
        os.chdir(b"queue")
    except OSError:
        return 111
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    return serve(0, 1, split)


def main() -> None:
    sys.exit(run(auto.QMAIL_HOME))
