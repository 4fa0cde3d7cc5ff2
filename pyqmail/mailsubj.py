"""mailsubj: `mailsubj subject recip...` sends fd 0 with a Subject and a To
field through qmail-inject (spec/inject.md §7); qmail's shell script
`( echo Subject: "$subject"; echo To: "$@"; echo ''; cat ) | qmail-inject`."""
import os
import signal
import sys

from pyqmail import auto, environ, errors


def run(argv: list[bytes], env: dict[bytes, bytes], qmail_home: bytes) -> int:
    if len(argv) < 2:
        # the script's `shift` fails before anything is sent, as /bin/sh does
        errors.write_line(2, b"mailsubj: shift: can't shift that many")
        return 2
    # echo's output: words joined by single spaces (no escapes interpreted)
    head = b"Subject: %s\nTo:%s\n\n" % (argv[1], b"".join(b" " + a for a in argv[2:]))
    inject = os.path.join(qmail_home, b"bin/qmail-inject")
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        pipe_r, pipe_w = os.pipe()
        pid = os.fork()
    except OSError as e:
        errors.write_line(2, b"mailsubj: fatal: unable to run qmail-inject: " + errors.error_str(e))
        return 111
    if pid == 0:
        try:
            os.close(pipe_w)
            os.dup2(pipe_r, 0)
            os.close(pipe_r)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execve(inject, [inject], env)
        except OSError as e:
            errors.write_line(2, b"mailsubj: fatal: unable to run qmail-inject: "
                              + errors.error_str(e))
        finally:
            os._exit(127)
    os.close(pipe_r)
    data = head
    try:
        while data:
            view = memoryview(data)
            while view:
                view = view[os.write(pipe_w, view):]
            data = os.read(0, 65536)
    except OSError:
        pass  # qmail-inject went away; its exit code tells
    os.close(pipe_w)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original(), auto.QMAIL_HOME))
