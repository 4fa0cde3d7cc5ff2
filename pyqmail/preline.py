"""preline: feed UFLINE, RPLINE, DTLINE and then the message to a program
(spec/admin-tools.md §6)."""
import os
import signal
import sys

from pyqmail import environ, errors, sgetopt

FATAL = b"preline: fatal: "
USAGE = b"preline: usage: preline cmd [ arg ... ]"


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    ufline, rpline, dtline = env.get(b"UFLINE"), env.get(b"RPLINE"), env.get(b"DTLINE")
    if ufline is None or rpline is None or dtline is None:
        errors.write_line(2, USAGE)
        return 100
    options, rest, problem = sgetopt.getopt(argv, b"frdFRD")
    if problem is not None:
        errors.write_line(2, problem)
        errors.write_line(2, USAGE)
        return 100
    flags = {b"f": True, b"r": True, b"d": True}
    for opt, _ in options:
        flags[opt.lower()] = opt.isupper()
    if not rest:
        errors.write_line(2, USAGE)
        return 100
    try:
        r, w = os.pipe()
    except OSError as e:
        errors.write_line(2, FATAL + b"unable to create pipe: " + errors.error_str(e))
        return 111
    try:
        pid = os.fork()
    except OSError as e:
        errors.write_line(2, FATAL + b"unable to fork: " + errors.error_str(e))
        return 111
    if pid == 0:
        code = 111
        try:
            os.close(w)
            try:
                os.dup2(r, 0)
            except OSError as e:
                errors.write_line(2, FATAL + b"unable to set up fds: " + errors.error_str(e))
                os._exit(111)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignored it at start-up
            try:
                os.execvpe(rest[0], rest, env)
            except OSError as e:
                code = 111 if errors.is_temporary(e) else 100
                errors.write_line(2, FATAL + b"unable to run %s: %s" % (rest[0], errors.error_str(e)))
        finally:
            os._exit(code)
    os.close(r)
    head = (ufline if flags[b"f"] else b"") + (rpline if flags[b"r"] else b"") + (dtline if flags[b"d"] else b"")
    failure = None
    try:
        data = head
        while True:
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
            data = os.read(0, 65536)
            if not data:
                break
    except OSError as e:
        failure = e
    os.close(w)
    try:
        _, status = os.waitpid(pid, 0)
    except OSError as e:
        errors.write_line(2, FATAL + b"wait failed: " + errors.error_str(e))
        return 111
    if failure is not None:
        errors.write_line(2, FATAL + b"unable to copy input: " + errors.error_str(failure))
        return 111
    if os.WIFSIGNALED(status):
        errors.write_line(2, FATAL + b"child crashed")
        return 111
    return os.WEXITSTATUS(status)


def main() -> None:
    # the environment as the caller gave it, without Python's LC_CTYPE=C.UTF-8
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
