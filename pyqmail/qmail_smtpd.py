"""qmail-smtpd: receive mail over SMTP (spec/smtpd.md).

Run once per connection by tcpserver (or inetd + tcp-env) as qmaild, fd 0 and
fd 1 the network.  The conversation is pyqmail.smtp's; this module owns the
descriptors, the timeouts, the control files, the environment and qmail-queue.
It imports only small modules: it starts once per connection.
"""
import os
import sys
import time

from pyqmail import auto, control, environ, fdio, ipme, qmail, smtp

READSIZE = 1024   # qmail-smtpd's ssinbuf


class Setup(Exception):
    """setup() failed; `reply` is what qmail-smtpd says before exit 1."""

    def __init__(self, reply: bytes):
        super().__init__(reply)
        self.reply = reply


def read_timeout(ctl: control.Control) -> int:
    """control/timeoutsmtpd as qmail's int: a value <= 0 becomes 1."""
    value = control.c_int(ctl.int(b"timeoutsmtpd", 1200))
    return value if value > 0 else 1


def read_databytes(ctl: control.Control, env: dict[bytes, bytes]) -> int:
    """control/databytes, overridden by $DATABYTES; an unsigned int, as in qmail."""
    databytes = ctl.int(b"databytes", 0)
    if b"DATABYTES" in env:
        value = control.scan_ulong(env[b"DATABYTES"])
        databytes = 0 if value is None else value
    databytes &= 0xFFFFFFFF
    if databytes == 0xFFFFFFFF:
        databytes -= 1
    return databytes


def morercpthosts_lookup(fd: int, path: bytes):
    """cdb_seek() on the already open morercpthosts.cdb (imported here, for
    the installations that have one: 1.6 ms of a start-up of 8)."""
    from pyqmail import cdb

    def lookup(key: bytes) -> bool:
        try:
            return cdb.find(fd, key, path) is not None
        except (OSError, cdb.CdbError):
            raise smtp.ControlsUnreadable() from None
    return lookup


def local_ips() -> frozenset:
    """ipme_init(): this host's IPv4 addresses, plus 0.0.0.0 as in netqmail."""
    out = {(0, 0, 0, 0)}
    for ip in ipme.ipv4_fast():
        parts = ip.split(".")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            out.add(tuple(int(p) & 0xFF for p in parts))
    return frozenset(out)


def setup(env: dict[bytes, bytes]) -> tuple[smtp.Config, int]:
    """setup() and ipme_init(), relative to QMAIL_HOME (the cwd): the session's
    configuration and the timeout; Setup with qmail's reply on failure."""
    ctl = control.Control(b".")
    try:
        ctl.me  # control_init(): an unreadable control/me stops qmail-smtpd too
        greeting = ctl.line(b"smtpgreeting", None, use_me=True)
        if greeting is None:
            raise Setup(smtp.DIE_CONTROL)
        liphost = ctl.line(b"localiphost", None, use_me=True)
        timeout = read_timeout(ctl)
        rcpthosts = ctl.list(b"rcpthosts")
        more = None
        if rcpthosts is not None:
            path = b"control/morercpthosts.cdb"
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                pass
            except OSError:
                raise Setup(smtp.DIE_CONTROL) from None
            else:
                more = morercpthosts_lookup(fd, path)
        badmailfrom = ctl.list(b"badmailfrom")
        databytes = read_databytes(ctl, env)
    except control.ControlError:
        raise Setup(smtp.DIE_CONTROL) from None
    try:
        ips = local_ips()
    except OSError:
        raise Setup(smtp.DIE_IPME) from None
    config = smtp.Config(
        greeting, liphost=liphost, local_ips=ips, rcpthosts=rcpthosts,
        morercpthosts=more, badmailfrom=badmailfrom, databytes=databytes,
        remoteip=env.get(b"TCPREMOTEIP", b"unknown"),
        remotehost=env.get(b"TCPREMOTEHOST", b"unknown"),
        remoteinfo=env.get(b"TCPREMOTEINFO"),
        local=env.get(b"TCPLOCALHOST", env.get(b"TCPLOCALIP", b"unknown")),
        relayclient=env.get(b"RELAYCLIENT"))
    return config, timeout


def write_all(fd: int, writes: list[bytes], timeout: int) -> bool:
    """safewrite(): False when a write fails or times out."""
    try:
        for data in writes:
            fdio.write_all_timeout(fd, data, timeout)
    except (OSError, fdio.Timeout):
        return False
    return True


def converse(session: smtp.Session, timeout: int, infd: int, outfd: int) -> int:
    """The command loop: read, let the session answer, write; until it ends."""
    if not write_all(outfd, [session.greet()], timeout):
        return 1
    while session.exit_code is None:
        try:
            data = fdio.read_timeout(infd, READSIZE, timeout)
        except fdio.Timeout:
            write_all(outfd, [session.timeout()], timeout)
            break
        except OSError:
            data = b""   # die_read()
        if not write_all(outfd, session.receive_writes(data), timeout):
            session.abort()
    return session.exit_code


def run(env: dict[bytes, bytes], qmail_home: bytes = auto.QMAIL_HOME,
        infd: int = 0, outfd: int = 1, new_queue=None) -> int:
    """One SMTP session as qmail-smtpd(8); return the exit code.  new_queue
    makes the session's qmail-queue (qmail.Qmail unless given)."""
    # Python already ignores SIGPIPE (qmail's sig_pipeignore): a write to a
    # closed connection fails with EPIPE.
    try:
        os.chdir(qmail_home)
        config, timeout = setup(env)
    except OSError:
        write_all(outfd, [smtp.DIE_CONTROL], 1200)
        return 1
    except Setup as e:
        write_all(outfd, [e.reply], 1200)
        return 1
    except MemoryError:
        write_all(outfd, [smtp.DIE_NOMEM], 1200)
        return 1

    if new_queue is None:
        def new_queue():
            return qmail.Qmail(qmail_home, env)
    session = smtp.Session(config, new_queue, time.time)
    try:
        return converse(session, timeout, infd, outfd)
    except Exception:
        # one catch-all: a bug is a temporary failure, never a traceback
        write_all(outfd, [session.bug()], timeout)
        return 1


def warm_up_session(env: dict[bytes, bytes], qmail_home: bytes, infd: int, outfd: int) -> int:
    """run() with qmail.Qmail's own code queueing to a stand-in service: a
    socket pair whose other end answers `qp 0` and `exit 0` and keeps nothing
    (closed at the end, and with it the descriptors sent)."""
    import socket
    others = []

    def service(_qmail_home: bytes):
        ours, theirs = socket.socketpair()
        theirs.sendall(b"qp 0\0exit 0\0")
        others.append(theirs)
        return ours
    try:
        return run(env, qmail_home, infd, outfd, lambda: qmail.Qmail(qmail_home, service=service))
    finally:
        for other in others:
            other.close()


WARM_UP_ROUNDS = 20
WARM_UP = (b"HELO warm-up\r\nEHLO warm-up\r\nNOOP\r\nMAIL FROM:<warm-up@warm-up.invalid>\r\n"
           b"RCPT TO:<postmaster@warm-up.invalid>\r\nRCPT TO:<postmaster>\r\nDATA\r\n"
           b"Received: from warm-up\r\nSubject: warm-up\r\n\r\n..warm-up\r\n.\r\n"
           b"RSET\r\nQUIT\r\n")


def warm_up(env: dict[bytes, bytes], qmail_home: bytes = auto.QMAIL_HOME) -> None:
    """Run this module's code over a made-up conversation, its message
    discarded, WARM_UP_ROUNDS times: what qmail-tcpsrv does before its first
    fork.  Python specializes code that runs often by writing into it; done
    here, once, every forked child starts with specialized code instead of
    specializing it again (a copy of every page it writes).  Changes nothing
    but the process: no queue, no log, no descriptor left open; the cwd is
    QMAIL_HOME afterwards, as run() leaves it.  Running out of descriptors
    ends it early: the children then just start colder."""
    env = dict(env)
    env.update({b"TCPLOCALIP": b"127.0.0.1", b"TCPREMOTEIP": b"127.0.0.1",
                b"TCPREMOTEHOST": b"localhost", b"TCPREMOTEINFO": b"warm-up"})
    env.pop(b"RELAYCLIENT", None)
    import gc
    before = open_fds()
    for _ in range(WARM_UP_ROUNDS):
        try:
            # the client: its commands in a pipe, then EOF; the replies go to
            # /dev/null, which takes any amount (a pipe would fill up and
            # wait for timeoutsmtpd under a long smtpgreeting)
            commands, client = os.pipe()
            os.write(client, WARM_UP)
            os.close(client)
            replies = os.open(b"/dev/null", os.O_WRONLY | os.O_CLOEXEC)
            warm_up_session(env, qmail_home, commands, replies)
        except OSError:
            return
        finally:
            # what the session opened and its exit would have closed (a
            # socket object left over closes its own, when collected)
            gc.collect()
            for fd in open_fds() - before:
                os.close(fd)


def open_fds() -> set[int]:
    """The descriptors open now (not the one that lists them)."""
    out = set()
    for name in os.listdir(b"/proc/self/fd"):
        try:
            os.fstat(int(name))
        except OSError:
            continue    # listdir's own, closed again
        out.add(int(name))
    return out


def main() -> None:
    sys.exit(run(environ.original()))


def forked_main(env: dict[bytes, bytes]) -> int:
    """main() in a child of qmail-tcpsrv, given the environment main() would
    find: the same session, without setting os.environ and reading it back."""
    return run(env)


# forked_main() keeps nothing from one call to the next (run() makes every
# object of a session and closes what it opens; warm_up() relies on it too),
# so one qmail-tcpsrv process may serve one session after another
REUSABLE = True
