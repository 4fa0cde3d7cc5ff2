"""qmail-popup: read a POP3 username and password (spec/pop3.md §2).

    qmail-popup hostname subprogram [args ...]

Run by tcpserver or inetd once per connection, as root, fd 0 and fd 1 the
network.  It reads only the AUTHORIZATION commands (pyqmail.pop3.Popup), then
runs the subprogram (a checkpassword) with `user\\0password\\0<timestamp>\\0` on
its fd 3 and the network on fds 0 and 1, and exits 1 when it ends.

As in notqmail 1.08, the subprogram's fd 2 is qmail-popup's own stderr (the
server's log), not a copy of the network as in qmail 1.03: nothing a
checkpassword or qmail-pop3d writes on stderr reaches the client.
It imports only small modules: it starts once per connection.
"""
import os
import sys
import time

from pyqmail import environ, errors, fdio, pop3

TIMEOUT = 1200   # qmail-popup's timeoutread/timeoutwrite
READSIZE = 128   # qmail-popup's ssinbuf: what it reads past the PASS line is lost


def send(outfd: int, data: bytes) -> bool:
    """safewrite(): False when the write fails or times out."""
    if not data:
        return True
    try:
        fdio.write_all_timeout(outfd, data, TIMEOUT)
    except (OSError, fdio.Timeout):
        return False
    return True


def doanddie(session: pop3.Popup, childargs: list[bytes], outfd: int) -> int:
    """Run the subprogram with the login on fd 3, wait for it, answer; exit 1."""
    try:
        os.close(3)
    except OSError:
        pass
    try:
        pipe_r, pipe_w = os.pipe()
    except OSError:
        send(outfd, pop3.ERR_PIPE)
        return 1
    if pipe_r != 3:
        send(outfd, pop3.ERR_PIPE)
        return 1
    try:
        pid = os.fork()
    except OSError:
        send(outfd, pop3.ERR_FORK)
        return 1
    if pid == 0:
        try:
            os.close(pipe_w)
            os.set_inheritable(3, True)
            # sig_pipedefault(); signal (with enum) is imported here, in the
            # child, so the session itself does not pay for it
            import signal
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execvpe(childargs[0], childargs, environ.original())
        finally:
            os._exit(1)
    os.close(pipe_r)
    data = session.pipe_data()
    try:
        try:
            fdio.write_all(pipe_w, data)
        except OSError:
            send(outfd, pop3.ERR_WRITE)
            return 1
    finally:
        os.close(pipe_w)
        session.forget(data)
    try:
        _, status = os.waitpid(pid, 0)
    except OSError:
        return 1
    reply = session.child_done(os.WIFSIGNALED(status),
                               os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0)
    send(outfd, reply)
    return session.exit_code


def run(argv: list[bytes], infd: int = 0, outfd: int = 1) -> int:
    """One POP3 authorization as qmail-popup(8); return the exit code."""
    # Python already ignores SIGPIPE (qmail's sig_pipeignore); the subprogram
    # gets it back at its default.
    if len(argv) < 3:
        send(outfd, pop3.ERR_USAGE)
        return 1
    hostname, childargs = argv[1], argv[2:]
    session = pop3.Popup(hostname, os.getpid(), int(time.time()))
    if not send(outfd, session.greet()):
        return 1
    while session.exit_code is None and session.login is None:
        try:
            data = fdio.read_timeout(infd, READSIZE, TIMEOUT)
        except (OSError, fdio.Timeout):
            return 1
        if not send(outfd, session.receive(data)):
            return 1
    if session.login is None:
        return session.exit_code
    return doanddie(session, childargs, outfd)


def main() -> None:
    try:
        code = run([os.fsencode(a) for a in sys.argv])
    except MemoryError:
        send(1, pop3.ERR_NOMEM)
        code = 1
    except Exception:
        # one catch-all: a bug ends the session as qmail-popup's die() does,
        # with a line in the log and never a traceback
        errors.note_bug(2)
        code = 1
    sys.exit(code)
