"""The caller's side of qmail-queue (qmail.c): open, put the message, give the
envelope, close, and turn the result into qmail's `Z`/`D` text.

    qq = Qmail(auto.QMAIL_HOME, env)
    qq.open()                 # Temporary if no queue can be started
    qq.put(b"Subject: x\n\nbody\n")
    qq.from_(b"a@example.org")
    qq.to(b"b@example.com")
    result = qq.close()       # b"" when queued, else b"Z..." / b"D..."
    qq.qp                     # after close(): the number for "qp N" (the Received line's PID)

By default the message and envelope pipes are handed to the queue service
(qmail-queued, uid qmailq) over its socket in queue/lock/; with QMAILQUEUE set,
that program is exec'd instead, as netqmail does (spec/queue.md §3.6-3.7).

The service is reached through _socket, the C module under socket.py
(connect, one sendmsg() with the descriptors and credentials, recv): importing
socket.py would cost every exec'd qmail-smtpd, qmail-inject and qmail-queue
that queues a message 5 ms of enum classes.  A program that queues through
QMAILQUEUE, or not at all, imports neither.
"""
import os

from pyqmail import errors, fdio

SOCKET = b"queue/lock/qmail-queued"
OUTSIZE = 8192   # bytes put() collects before a write: the queue wakes once for them

# spec/smtpd.md §9.6: qmail-queue's exit code -> the caller's result string
EXIT_TEXT = {
    54: b"Zqq read error (#4.3.0)",
    11: b"Denvelope address too long for qq (#5.1.3)",
    115: b"Denvelope address too long for qq (#5.1.3)",
    31: b"Dmail server permanently rejected message (#5.3.0)",
    51: b"Zqq out of memory (#4.3.0)",
    52: b"Zqq timeout (#4.3.0)",
    53: b"Zqq write error or disk full (#4.3.0)",
    55: b"Zqq unable to read configuration (#4.3.0)",
    56: b"Zqq trouble making network connection (#4.3.0)",
    61: b"Zqq trouble in home directory (#4.3.0)",
    62: b"Zqq trouble creating files in queue (#4.3.0)",
    63: b"Zqq trouble creating files in queue (#4.3.0)",
    64: b"Zqq trouble creating files in queue (#4.3.0)",
    65: b"Zqq trouble creating files in queue (#4.3.0)",
    66: b"Zqq trouble creating files in queue (#4.3.0)",
    71: b"Zmail server temporarily rejected message (#4.3.0)",
    72: b"Zconnection to mail server timed out (#4.4.1)",
    73: b"Zconnection to mail server rejected (#4.4.1)",
    74: b"Zcommunication with mail server failed (#4.4.2)",
    81: b"Zqq internal bug (#4.3.0)",
    91: b"Zqq internal bug (#4.3.0)",
    120: b"Zunable to exec qq (#4.3.0)",
}
READ_ERROR = EXIT_TEXT[54]
CRASHED = b"Zqq crashed (#4.3.0)"
WAITPID_SURPRISE = b"Zqq waitpid surprise (#4.3.0)"


def exit_text(code: int) -> bytes:
    """qmail.c's qmail_close(): the result string for an exit code (b"" = queued)."""
    if code == 0:
        return b""
    if code in EXIT_TEXT:
        return EXIT_TEXT[code]
    if 11 <= code <= 40:
        return b"Dqq permanent problem (#5.3.0)"
    return b"Zqq temporary problem (#4.3.0)"


def socket_path(qmail_home: bytes) -> bytes:
    return os.path.join(qmail_home, SOCKET)


def connect(qmail_home: bytes) -> "_socket.socket | None":
    """A connection to the queue service, or None when it is not running."""
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(socket_path(qmail_home))
    except OSError:
        s.close()
        return None
    return s


def submit(s: "_socket.socket", message_fd: int, envelope_fd: int, request: bytes = b"Q") -> None:
    """Hand the two read descriptors to the service (SCM_RIGHTS) with the
    caller's real uid (SCM_CREDENTIALS, which the kernel checks): qmail-queue's
    getuid(), also for a setuid caller.  Request P (bin/qmail-queue) asks to be
    numbered with the caller's own pid."""
    import _socket
    import _struct
    fds = _struct.pack("ii", message_fd, envelope_fd)
    creds = _struct.pack("iII", os.getpid(), os.getuid(), os.getgid())  # struct ucred
    s.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds),
                          (_socket.SOL_SOCKET, _socket.SCM_CREDENTIALS, creds)])


def read_record(s: "_socket.socket", buf: bytearray) -> bytes | None:
    """The next NUL-terminated record from the service, None at EOF."""
    while b"\0" not in buf:
        try:
            chunk = s.recv(64)
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
        if len(buf) > 64:
            return None
    record, _, rest = bytes(buf).partition(b"\0")
    buf[:] = rest
    return record


def parse_number(record: bytes | None, prefix: bytes) -> int | None:
    if record is None or not record.startswith(prefix) or not record[len(prefix):].isdigit():
        return None
    return int(record[len(prefix):])


class Qmail:
    """One submission (qmail.c's struct qmail)."""

    def __init__(self, qmail_home: bytes, env: dict[bytes, bytes] | None = None,
                 service=connect):
        self.qmail_home = qmail_home
        self.service = service   # connect(qmail_home): the queue service's socket, or None
        self.env = env or {}     # the caller's environment, as a C program's environ
        self.program = self.env.get(b"QMAILQUEUE")
        self.qp = 0
        self._flagerr = False
        self._msg = -1
        self._env = -1
        self._sock: "_socket.socket | None" = None
        self._buf = bytearray()   # the service's replies
        self._out = bytearray()   # qmail.c's substdio buffer: message, then envelope
        self._pid = 0
        self._early_exit: int | None = None

    def open(self) -> None:
        """Start a qmail-queue; Temporary when the pipes cannot be made."""
        try:
            msg_r, self._msg = os.pipe()
        except OSError as e:
            raise errors.Temporary(b"unable to make pipes: %s" % errors.error_str(e)) from None
        try:
            env_r, self._env = os.pipe()
        except OSError as e:
            os.close(msg_r)
            self._close_message()
            raise errors.Temporary(b"unable to make pipes: %s" % errors.error_str(e)) from None
        try:
            if self.program is not None:
                self._exec(msg_r, env_r)
            else:
                self._service(msg_r, env_r)
        except BaseException:
            # qmail.c closes all four ends when vfork fails
            self._close_message()
            os.close(self._env)
            self._env = -1
            raise
        finally:
            os.close(msg_r)
            os.close(env_r)

    def _service(self, msg_r: int, env_r: int) -> None:
        self._sock = self.service(self.qmail_home)
        if self._sock is None:
            self._early_exit = 73
            return
        try:
            submit(self._sock, msg_r, env_r)
        except OSError:
            self._early_exit = 74
        # the service's `qp N` waits in the socket until close(): the message
        # goes out without waiting for it (callers read qp after close())

    def _exec(self, msg_r: int, env_r: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 120
            try:
                os.close(self._msg)
                os.close(self._env)
                os.dup2(msg_r, 0)
                os.dup2(env_r, 1)
                code = 61
                os.chdir(self.qmail_home)
                code = 120
                import signal
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                os.execve(self.program, [self.program], self.env)
            except BaseException:
                pass
            os._exit(code)
        self._pid = pid
        self.qp = pid

    def put(self, data: bytes) -> None:
        """Message bytes (LF line ends, as the queue stores them), written out
        as the buffer fills and when the envelope starts."""
        if self._flagerr or self._msg < 0:
            return
        self._out += data
        if len(self._out) >= OUTSIZE:
            self._flush(self._msg)

    def _flush(self, fd: int) -> None:
        """substdio_flush(): what put() and the envelope collected, to fd."""
        try:
            if not self._flagerr:
                fdio.write_all(fd, self._out)
        except OSError:
            self._flagerr = True
        self._out.clear()

    def _close_message(self) -> None:
        if self._msg >= 0:
            self._flush(self._msg)
            os.close(self._msg)
            self._msg = -1

    def _put_envelope(self, data: bytes) -> None:
        self._close_message()
        if self._flagerr or self._env < 0:
            return
        self._out += data
        if len(self._out) >= OUTSIZE:
            self._flush(self._env)

    def from_(self, sender: bytes) -> None:
        """End the message; give the envelope sender."""
        self._put_envelope(b"F" + sender + b"\0")

    def to(self, recipient: bytes) -> None:
        self._put_envelope(b"T" + recipient + b"\0")

    def fail(self) -> None:
        """Abandon the submission: qmail-queue sees a read error and queues nothing."""
        self._flagerr = True

    def close(self) -> bytes:
        """Finish the envelope and wait: b"" when queued, else qmail's Z/D text."""
        if not self._flagerr:
            self._put_envelope(b"\0")
        else:
            self._close_message()
        if self._env >= 0:
            self._flush(self._env)
            os.close(self._env)
            self._env = -1
        try:
            code = self._wait()
        except ChildProcessError:
            # no such child: SIGCHLD ignored by whoever started us, say
            return WAITPID_SURPRISE
        if code is None:
            return CRASHED
        if code == 0 and self._flagerr:
            return READ_ERROR
        return exit_text(code)

    def _wait(self) -> int | None:
        if self._early_exit is not None:
            if self._sock is not None:
                self._sock.close()
            return self._early_exit
        if self._pid:
            _, status = os.waitpid(self._pid, 0)
            if os.WIFSIGNALED(status):
                return None
            return os.WEXITSTATUS(status)
        try:
            qp = parse_number(read_record(self._sock, self._buf), b"qp ")
            code = None if qp is None else parse_number(read_record(self._sock, self._buf), b"exit ")
        finally:
            self._sock.close()
        if qp is not None:
            self.qp = qp
        return 74 if code is None else code
