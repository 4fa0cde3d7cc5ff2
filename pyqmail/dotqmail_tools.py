"""What the .qmail helper programs share (spec/admin-tools.md §6): running a
child program on the same stdin and queueing a copy of the message."""
import os

from pyqmail import auto, environ, errors
from pyqmail.qmail import Qmail


class Fatal(Exception):
    def __init__(self, text: bytes, code: int = 111):
        super().__init__(text)
        self.text = text
        self.code = code


def run_child(argv: list[bytes]) -> int:
    """fork/exec argv with our fds; its exit code (exec failure: 111 if the
    errno is temporary, else 100)."""
    try:
        pid = os.fork()
    except OSError as e:
        raise Fatal(b"unable to fork: " + errors.error_str(e)) from None
    if pid == 0:
        code = 100
        try:
            import signal
            # Python ignores both at start-up; the program gets them as the
            # shell that ran us had them
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            # the environment we were given: not os.environ, where Python's
            # start-up may have added LC_CTYPE (pyqmail/environ.py)
            os.execvpe(argv[0], argv, environ.original())
        except OSError as e:
            code = 111 if errors.is_temporary(e) else 100
        finally:
            os._exit(code)
    try:
        _, status = os.waitpid(pid, 0)
    except OSError:
        raise Fatal(b"wait failed") from None
    if os.WIFSIGNALED(status):
        raise Fatal(b"child crashed")
    return os.WEXITSTATUS(status)


def queue_copy(env: dict[bytes, bytes], dtline: bytes, sender: bytes,
               recipients: list[bytes]) -> int:
    """Queue dtline + stdin from sender to recipients; the qp, or Fatal with
    the queue's text (100 for `D`, else 111)."""
    qq = Qmail(auto.QMAIL_HOME, env)
    try:
        qq.open()
    except OSError as e:
        raise Fatal(b"unable to fork: " + errors.error_str(e)) from None
    except errors.Temporary as e:
        raise Fatal(b"unable to fork: " + e.text.rpartition(b": ")[2]) from None
    qq.put(dtline)
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError as e:
            qq.fail()
            qq.close()
            raise Fatal(b"unable to read message: " + errors.error_str(e)) from None
        if not chunk:
            break
        qq.put(chunk)
    qq.from_(sender)
    for r in recipients:
        qq.to(r)
    result = qq.close()
    if result:
        raise Fatal(result[1:], 100 if result[:1] == b"D" else 111)
    return qq.qp
