"""qmail-queue: put one message into the queue (spec/queue.md §3).

The algorithm, `queue_message()`, runs as qmailq: in the queue service
(qmail-queued) for every caller, or directly when root or qmailq runs
bin/qmail-queue.  Any other caller's bin/qmail-queue hands its fd 0 and fd 1 to
the service and exits with the service's code; it never writes the queue.
"""
import os
import sys
import time

from pyqmail import auto, date822, fdio

CHUNK = 65536
ADDRESS_MAX = 1003      # an address and its NUL must fit in 1003 bytes (§3.4)
DEATH = 86400           # §3.2 step 7: give up after 24 h, below the 36 h of §7
CRASHTEST = b"lock/crashtest"  # fault injection, see crash_point()



class QueueExit(Exception):
    """Stop with qmail-queue's exit code."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code




def received_line(pid: int, uid: int, t: float, uids: "Uids") -> bytes:
    """§3.3: `Received: (qmail PID invoked WHO); DATE`."""
    if uid == uids.alias:
        who = b"by alias"
    elif uid == uids.qmaild:
        who = b"from network"
    elif uid == uids.qmails:
        who = b"for bounce"
    else:
        who = b"by uid %d" % uid
    return b"Received: (qmail %d invoked %s); %s\n" % (pid, who, date822.date822fmt(t))


class Uids:
    """The uids qmail-queue's Received line distinguishes."""

    def __init__(self, alias: int = auto.UID_ALIAS, qmaild: int = auto.UID_QMAILD,
                 qmails: int = auto.UID_QMAILS):
        self.alias, self.qmaild, self.qmails = alias, qmaild, qmails


def crash_point(queue: bytes) -> bytes | None:
    """Fault injection for the crash-safety tests: when QMAIL_HOME/queue/lock/crashtest
    exists (only root or qmailq can make it), the queueing process kills itself
    with SIGKILL at the step the file names (pidfile, mess, body, intd, envelope,
    todo)."""
    try:
        with open(os.path.join(queue, CRASHTEST), "rb") as f:
            return f.read().strip()
    except OSError:
        return None


def maybe_crash(fault: bytes | None, step: bytes) -> None:
    if fault == step:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def write_out(fd: int, data: bytes) -> None:
    try:
        fdio.write_all(fd, data)
    except OSError:
        raise QueueExit(53) from None


def read_in(fd: int, deadline: float) -> bytes:
    """One read; 52 once the 24-hour deadline passes (qmail's alarm), 54 on error."""
    try:
        if not fdio.wait_readable(fd, max(0.0, deadline - time.monotonic())):
            raise QueueExit(52)
        return os.read(fd, CHUNK)
    except OSError:
        raise QueueExit(54) from None


class Envelope:
    """Incremental check of `F sender NUL (T rcpt NUL)* NUL` (§3.4)."""

    def __init__(self):
        self.state = b"F"   # F: expect sender record; T: expect T or final NUL
        self.length = 0     # bytes of the current address so far (in an address)
        self.in_address = False
        self.done = False

    def feed(self, data: bytes) -> int:
        """Check data; return how many bytes belong to the envelope (it stops at
        the final NUL); QueueExit 91 or 11 on bad envelopes."""
        i = 0
        n = len(data)
        while i < n:
            if not self.in_address:
                c = data[i]
                if self.state == b"F":
                    if c != 0x46:
                        raise QueueExit(91)
                    self.state = b"T"
                elif c == 0:
                    self.done = True
                    return i + 1
                elif c != 0x54:
                    raise QueueExit(91)
                self.in_address = True
                self.length = 0
                i += 1
                continue
            end = data.find(b"\0", i)
            stop = n if end < 0 else end + 1
            self.length += stop - i
            if self.length > ADDRESS_MAX or (end < 0 and self.length >= ADDRESS_MAX):
                raise QueueExit(11)
            if end >= 0:
                self.in_address = False
            i = stop
        return n


def queue_message(queue: bytes, message_fd: int, envelope_fd: int, uid: int, pid: int,
                  split: int = auto.SPLIT, uids: Uids | None = None) -> int:
    """Queue one message from message_fd and envelope_fd into the queue directory;
    return qmail-queue's exit code.  Runs as qmailq with umask 033."""
    uids = uids or Uids()
    t = time.time()
    deadline = time.monotonic() + DEATH
    fault = crash_point(queue)
    received = received_line(pid, uid, t, uids)
    mess = intd = -1
    mess_name = intd_name = None
    try:
        # §3.2 step 8: pid/PID.T.SEQ, SEQ 1..9
        for seq in range(1, 10):
            pid_name = b"%s/pid/%d.%d.%d" % (queue, pid, int(t), seq)
            try:
                mess = os.open(pid_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except OSError:
                continue
        else:
            return 63
        maybe_crash(fault, b"pidfile")
        try:
            inode = os.fstat(mess).st_ino
        except OSError:
            return 63
        part = b"%d" % (inode % split)
        name = b"%d" % inode
        mess_dir = b"%s/mess/%s" % (queue, part)
        try:
            os.link(pid_name, b"%s/%s" % (mess_dir, name))
        except OSError:
            return 64
        try:
            os.unlink(pid_name)
        except OSError:
            return 63
        mess_name = b"%s/%s" % (mess_dir, name)
        maybe_crash(fault, b"mess")
        # step 12: the Received line, then fd 0 to EOF
        write_out(mess, received)
        while True:
            chunk = read_in(message_fd, deadline)
            if not chunk:
                break
            write_out(mess, chunk)
        maybe_crash(fault, b"body")
        try:
            os.fsync(mess)
            # Linux: the mess/N entry survives a crash only once mess/N is
            # synced; it must be durable before the todo link commits (§8 inv. 2).
            fdio.fsync_dir(mess_dir)
        except OSError:
            raise QueueExit(53) from None
        # step 14: intd/ID
        try:
            intd = os.open(b"%s/intd/%s" % (queue, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            return 65
        intd_name = b"%s/intd/%s" % (queue, name)
        maybe_crash(fault, b"intd")
        write_out(intd, b"u%d\0p%d\0" % (uid, pid))
        envelope = Envelope()
        pending = bytearray()
        while not envelope.done:
            chunk = read_in(envelope_fd, deadline)
            if not chunk:
                raise QueueExit(54)
            used = envelope.feed(chunk)
            pending += chunk[:used]
            if envelope.done:
                del pending[-1]       # the stored file has no final empty record
            if len(pending) >= CHUNK or envelope.done:
                write_out(intd, bytes(pending))
                pending.clear()
        maybe_crash(fault, b"envelope")
        try:
            os.fsync(intd)
        except OSError:
            raise QueueExit(53) from None
        # step 18: the commit
        try:
            os.link(intd_name, b"%s/todo/%s" % (queue, name))
        except OSError:
            return 66
        try:
            # the todo entry is the commit: durable before we report success
            fdio.fsync_dir(b"%s/todo" % queue)
        except OSError:
            return 66
        maybe_crash(fault, b"todo")
        pull_trigger(queue)
        return 0
    except QueueExit as e:
        if e.code in (53, 54):
            cleanup(intd, intd_name, mess, mess_name)
        return e.code
    finally:
        for fd in (mess, intd):
            if fd >= 0:
                os.close(fd)


def cleanup(intd: int, intd_name: bytes | None, mess: int, mess_name: bytes | None) -> None:
    """§3.2 cleanup on 53/54: truncate and unlink intd, then the message."""
    if intd_name is not None:
        try:
            os.ftruncate(intd, 0)
        except OSError:
            pass
        try:
            os.unlink(intd_name)
        except OSError:
            return
    if mess_name is not None:
        try:
            os.ftruncate(mess, 0)
        except OSError:
            pass
        try:
            os.unlink(mess_name)
        except OSError:
            pass


def pull_trigger(queue: bytes) -> None:
    """§3.8: one byte into lock/trigger if qmail-send is listening."""
    try:
        fd = os.open(queue + b"/lock/trigger", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, b"\0")
    except OSError:
        pass
    finally:
        os.close(fd)


def run_direct(qmail_home: bytes, uid: int, pid: int) -> int:
    """Root or qmailq: queue fd 0/fd 1 in this process, as qmailq."""
    import signal
    for sig in (signal.SIGPIPE, signal.SIGVTALRM, signal.SIGPROF, signal.SIGQUIT,
                signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, lambda *_: os._exit(52))
    signal.alarm(DEATH)
    os.umask(0o033)
    try:
        os.chdir(qmail_home)
    except OSError:
        return 61
    try:
        os.chdir(b"queue")
    except OSError:
        return 62
    if os.geteuid() == 0:
        from pyqmail import prot
        prot.drop(auto.UID_QMAILQ, auto.GID_QMAIL)
    return queue_message(b".", 0, 1, uid, pid)


def run_client(qmail_home: bytes) -> int:
    """Anyone else: hand fd 0 and fd 1 to the queue service and wait for its code."""
    from pyqmail import qmail
    for fd in (0, 1):
        try:
            os.fstat(fd)
        except OSError:
            return 54  # qmail-queue cannot read a closed descriptor
    s = qmail.connect(qmail_home)
    if s is None:
        os.write(2, b"qmail-queue: fatal: unable to connect to the queue service "
                    b"(qmail-queued is not running)\n")
        return 73
    buf = bytearray()
    try:
        # P: this process is qmail-queue to its caller, who may print its pid
        # as the qp (fastforward, dot-forward); the service numbers it so.
        qmail.submit(s, 0, 1, b"P")
        if qmail.parse_number(qmail.read_record(s, buf), b"qp ") is None:
            return 74
        code = qmail.parse_number(qmail.read_record(s, buf), b"exit ")
    except OSError:
        return 74
    finally:
        s.close()
    return 74 if code is None else code


def main() -> None:
    try:
        uid = os.getuid()
        if uid == 0 or os.geteuid() == auto.UID_QMAILQ:
            code = run_direct(auto.QMAIL_HOME, uid, os.getpid())
        else:
            code = run_client(auto.QMAIL_HOME)
    except BaseException:
        code = 81
    sys.exit(code)
