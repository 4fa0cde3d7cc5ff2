"""qmail-queued: the queue service, pyqmail's stand-in for qmail-queue's setuid bit.

Runs as qmailq and listens on the Unix socket queue/lock/qmail-queued, which
anyone may connect to.  A caller (bin/qmail-queue, or qmail-smtpd, qmail-inject
and qmail-send through pyqmail.qmail) sends one byte with its message and
envelope read descriptors attached (SCM_RIGHTS) and its real uid (SCM_CREDENTIALS,
which the kernel checks: qmail-queue's getuid(), also for a setuid caller; a
caller that sends none is named by SO_PEERCRED's uid).  The service answers
`qp N\\0`, runs qmail-queue's algorithm reading straight from those
descriptors, and answers `exit C\\0`.

Each submission has a thread of its own, so a stalled client blocks nobody.
N names the pid/ file and the Received line: for request byte P (sent by
bin/qmail-queue) it is the caller's pid from SO_PEERCRED, the qmail-queue
process its own caller forked, as in qmail; for Q (in-process clients) it is
the thread's kernel id.  Either is unique among running submissions
while its caller lives.

The threads are _thread's and the connections _socket's: threading.Thread's
start-up handshake (an Event the accepting thread waits on) and socket.py's
Python wrappers cost a submission more CPU than queueing a small message does
in Python.
"""
import _signal
import _socket
import _thread
import array
import errno
import fcntl
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time

from pyqmail import auto, errors, prot, qmail, qmail_queue

FATAL = b"qmail-queued: fatal: "
MAX_CLIENTS = 1000
ALREADY_RUNNING = 100
STOP_GRACE = 60  # seconds a SIGTERM waits for submissions under way
SO_PEERCRED_FORMAT = "iII"  # struct ucred: pid_t pid; uid_t uid; gid_t gid


UCRED = struct.Struct(SO_PEERCRED_FORMAT)


def peer_creds(conn: _socket.socket) -> tuple[int, int]:
    """The connecting process's pid and uid, as the kernel recorded them at connect()."""
    pid, uid, _ = UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
    return pid, uid


def receive_fds(conn: _socket.socket) -> tuple[bytes, int | None, int, int] | None:
    """The request byte (Q or P), the uid of the caller's SCM_CREDENTIALS (None
    if it sent none) and exactly two descriptors; None on a bad request."""
    fds = array.array("i")
    uid = None
    try:
        data, ancdata, flags, _ = conn.recvmsg(1, socket.CMSG_SPACE(4 * fds.itemsize)
                                               + socket.CMSG_SPACE(UCRED.size))
    except OSError:
        return None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            if len(payload) >= UCRED.size:
                uid = UCRED.unpack_from(payload)[1]
    if data not in (b"Q", b"P") or len(fds) != 2 or flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        return None
    return data, uid, fds[0], fds[1]


class Stop(Exception):
    """SIGTERM: stop accepting."""


class Service:
    """The listening socket and the per-submission threads."""

    def __init__(self, queue: bytes, uids: qmail_queue.Uids | None = None):
        self.queue = queue
        self.uids = uids or qmail_queue.Uids()
        self.slots = threading.BoundedSemaphore(MAX_CLIENTS)

    def handle(self, conn: _socket.socket) -> None:
        # SIGTERM must reach the accepting main thread, never a worker
        _signal.pthread_sigmask(_signal.SIG_BLOCK, (_signal.SIGTERM,))
        try:
            # the caller's real uid comes with its request (SCM_CREDENTIALS, checked
            # by the kernel); SO_PEERCRED, the effective uid at connect(), is the
            # same for every caller but a setuid one
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            pid, uid = peer_creds(conn)
            request = receive_fds(conn)
            if request is None:
                return
            kind, real_uid, fds = request[0], request[1], request[2:]
            if real_uid is not None:
                uid = real_uid
            try:
                # P: the caller is bin/qmail-queue, whose pid its own caller knows
                # as the qp, as with qmail's qmail-queue process; a live pid is
                # no running thread's id.  Q: an in-process client learns N here.
                qp = pid if kind == b"P" and pid > 0 else _thread.get_native_id()
                conn.sendall(b"qp %d\0" % qp)
                try:
                    code = qmail_queue.queue_message(self.queue, fds[0], fds[1], uid, qp,
                                                     auto.SPLIT, self.uids)
                except Exception:
                    code = 81
                conn.sendall(b"exit %d\0" % code)
            finally:
                os.close(fds[0])
                os.close(fds[1])
        except OSError:
            pass
        finally:
            conn.close()
            self.slots.release()

    def serve(self, listener: socket.socket) -> None:
        """Accept until SIGTERM; then let the submissions under way finish."""
        def stop(*_):
            raise Stop()
        signal.signal(signal.SIGTERM, stop)
        try:
            self.accept_loop(listener)
        except Stop:
            pass
        listener.close()
        deadline = time.monotonic() + STOP_GRACE
        for _ in range(MAX_CLIENTS):
            if not self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break

    def accept_loop(self, listener: socket.socket) -> None:
        while True:
            self.slots.acquire()
            try:
                fd, _ = listener._accept()
            except Stop:
                self.slots.release()
                raise
            except OSError as e:
                self.slots.release()
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    time.sleep(0.1)
                continue
            conn = _socket.socket(fileno=fd)
            try:
                _thread.start_new_thread(self.handle, (conn,))
            except RuntimeError:
                # no thread to be had (qmail-queue's fork failing): the caller
                # sees its connection closed, as when the service dies
                conn.close()
                self.slots.release()
                time.sleep(0.1)


def listen(qmail_home: bytes) -> socket.socket:
    """Bind queue/lock/qmail-queued (replacing a stale socket), world-connectable."""
    path = qmail.socket_path(qmail_home)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o111)
    try:
        s.bind(path)
    finally:
        os.umask(old)
    s.listen(128)
    return s


def run(qmail_home: bytes) -> int:
    try:
        if os.geteuid() == 0:
            prot.drop(auto.UID_QMAILQ, auto.GID_QMAIL)
    except OSError as e:
        errors.write_line(2, FATAL + b"unable to drop privileges: " + errors.error_str(e))
        return 111
    if os.geteuid() != auto.UID_QMAILQ:
        errors.write_line(2, FATAL + b"must run as qmailq or root")
        return 111
    try:
        os.chdir(qmail_home)
        os.chdir(b"queue")
    except OSError as e:
        errors.write_line(2, FATAL + b"unable to switch to %s/queue: %s" % (qmail_home, errors.error_str(e)))
        return 111
    os.umask(0o033)
    for sig in (signal.SIGPIPE, signal.SIGHUP, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_IGN)
    try:
        # one service per queue: a lock on queue/lock itself
        lock_fd = os.open(b"lock", os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            errors.write_line(2, FATAL + b"qmail-queued is already running")
            return ALREADY_RUNNING
        else:
            errors.write_line(2, FATAL + b"unable to lock queue/lock: " + errors.error_str(e))
        return 111
    try:
        listener = listen(qmail_home)
    except OSError as e:
        errors.write_line(2, FATAL + b"unable to listen on %s: %s"
                          % (qmail.socket_path(qmail_home), errors.error_str(e)))
        return 111
    Service(b".").serve(listener)
    return 0


def keep(qmail_home: bytes) -> int:
    """`qmail-queued -p`, as qmail-start runs it: keep a server running (restart
    it a second after it dies) for as long as the parent, qmail-send, lives;
    then stop it, letting submissions under way finish."""
    try:
        if os.geteuid() == 0:
            prot.drop(auto.UID_QMAILQ, auto.GID_QMAIL)
    except OSError as e:
        errors.write_line(2, FATAL + b"unable to drop privileges: " + errors.error_str(e))
        return 111
    parent = os.getppid()
    if parent == 1:
        return 0  # qmail-send is gone already: nothing to serve for
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    while True:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 111
            try:
                code = run(qmail_home)
            finally:
                os._exit(code)
        started = time.monotonic()
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if stop or os.getppid() != parent:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
                return 0
            time.sleep(0.2)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == ALREADY_RUNNING:
            return 111
        if stop or os.getppid() != parent:
            return 0
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


def main() -> None:
    if sys.argv[1:] == ["-p"]:
        sys.exit(keep(auto.QMAIL_HOME))
    sys.exit(run(auto.QMAIL_HOME))
