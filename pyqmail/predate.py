"""predate: run a program with a local-time Date field put in front of its
input (spec/inject.md §7)."""
import errno
import os
import signal
import sys
import time

from pyqmail import date822, environ, errors

FATAL = b"predate: fatal: "


def date_field(now: float) -> bytes:
    """`Date: D Mon YYYY HH:MM:SS +HHMM`: local time, offset rounded to the minute."""
    t = time.localtime(now)
    offset = t.tm_gmtoff
    sign = b"-" if offset < 0 else b"+"
    minutes = (abs(offset) + 30) // 60
    return b"Date: %d %s %d %02d:%02d:%02d %s%02d%02d\n" % (
        t.tm_mday, date822.MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec,
        sign, minutes // 60, minutes % 60)


def child(argv: list[bytes], env: dict[bytes, bytes], pipe_r: int, pipe_w: int) -> None:
    """In the forked child: the pipe becomes fd 0, then exec argv[1] (PATH search)."""
    code = 111
    try:
        os.close(pipe_w)
        try:
            os.dup2(pipe_r, 0)
            if pipe_r != 0:
                os.close(pipe_r)
        except OSError as e:
            errors.write_line(2, FATAL + b"unable to set up fds: " + errors.error_str(e))
            return
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        try:
            if not argv[1]:
                # execvp("") fails with ENOENT; Python would raise ValueError instead
                raise FileNotFoundError(errno.ENOENT, "")
            os.execvpe(argv[1], argv[1:], env)
        except OSError as e:
            errors.write_line(2, FATAL + b"unable to run %s: %s" % (argv[1], errors.error_str(e)))
    finally:
        os._exit(code)


def copy(source: int, dest: int, head: bytes) -> None:
    """The Date field, then fd 0; write errors are ignored (substdio_copy)."""
    data = head
    try:
        while True:
            view = memoryview(data)
            while view:
                view = view[os.write(dest, view):]
            data = os.read(source, 65536)
            if not data:
                return
    except OSError:
        return


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if len(argv) < 2:
        errors.write_line(2, b"predate: usage: predate child")
        return 100
    try:
        pipe_r, pipe_w = os.pipe()
    except OSError as e:
        errors.write_line(2, FATAL + b"unable to create pipe: " + errors.error_str(e))
        return 111
    try:
        pid = os.fork()
    except OSError as e:
        errors.write_line(2, FATAL + b"unable to fork: " + errors.error_str(e))
        return 111
    if pid == 0:
        child(argv, env, pipe_r, pipe_w)
    os.close(pipe_r)
    copy(0, pipe_w, date_field(time.time()))
    os.close(pipe_w)
    try:
        _, status = os.waitpid(pid, 0)
    except OSError as e:
        errors.write_line(2, FATAL + b"wait failed: " + errors.error_str(e))
        return 111
    if os.WIFSIGNALED(status):
        errors.write_line(2, FATAL + b"child crashed")
        return 111
    return os.WEXITSTATUS(status)


def main() -> None:
    # the child gets the environment as the caller gave it (no LC_CTYPE=C.UTF-8)
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
