"""qmail-rspawn: run remote deliveries for qmail-send (spec/remote.md §2,
spec/send.md §7).

fd 0: commands `SLOT` `N/ID\\0` `SENDER\\0` `RECIPIENT\\0`; fd 1: the concurrency
byte at start, then per delivery `SLOT` + `K`/`Z`/`D` + text + `\\0`, in
completion order.  Each delivery is a forked child that runs qmail-remote's
code in-process (renamed qmail-remote), or execs `$QMAILREMOTE` when that is
set (notqmail 1.08).
"""
import os
import select
import signal
import stat
import sys

from pyqmail import auto, errors, qdns, qmail_remote, tcpto

READ_LIMIT = 1 << 20   # a child's output beyond this is read and dropped; qmail-remote
                       # writes at most a few kB, and qmail-send keeps only 10000 bytes

ERR_NOMEM = b"Zqmail-spawn out of memory. (#4.3.0)\n"
ERR_DELNUM_BIG = b"ZInternal error: delnum too big. (#4.3.5)\n"
ERR_DELNUM_USED = b"ZInternal error: delnum in use. (#4.3.5)\n"
ERR_NONNUMERIC = b"DInternal error: messid has nonnumerics. (#5.3.5)\n"
ERR_TOO_LONG = b"DInternal error: messid too long. (#5.3.5)\n"
ERR_TOO_SHORT = b"DInternal error: messid too short. (#5.3.5)\n"
ERR_NO_HOST = b"DSorry, address must include host name. (#5.1.3)\n"
ERR_OPEN = b"Zqmail-spawn unable to open message. (#4.3.0)\n"
ERR_FSTAT = b"Zqmail-spawn unable to fstat message. (#4.3.0)\n"
ERR_TYPE = b"ZSorry, message has wrong type. (#4.3.5)\n"
ERR_OWNER = b"ZSorry, message has wrong owner. (#4.3.5)\n"
ERR_PIPE = b"Zqmail-spawn unable to create pipe. (#4.3.0)\n"
ERR_FORK = b"Zqmail-spawn unable to fork. (#4.3.0)\n"

CRASHED = b"Zqmail-remote crashed.\n"
RUN_TEMP = b"ZUnable to run qmail-remote.\n"
RUN_PERM = b"DUnable to run qmail-remote.\n"
NO_OUTPUT = b"Zqmail-remote produced no output.\n"


def report(status: int, out: bytes) -> bytes:
    """qmail-rspawn's report(): the `K`/`Z`/`D` text for a child's exit status
    and output (spec/remote.md §2.4)."""
    if os.WIFSIGNALED(status):
        return CRASHED
    code = os.waitstatus_to_exitcode(status)
    if code == 111:
        return RUN_TEMP
    if code != 0:
        return RUN_PERM
    if not out:
        return NO_OUTPUT
    result = -1
    j = 0
    k = out.find(b"\0")
    while k >= 0:
        first = out[j:j + 1]
        if first == b"K":
            result = 1
            break
        if first == b"Z":
            result = 0
            break
        if first == b"D":
            break
        j = k + 1
        k = out.find(b"\0", j)
    letter = result
    if out[:1] == b"s":
        letter = 0
    elif out[:1] == b"h":
        letter = -1
    text = [b"DZK"[letter + 1:letter + 2]]
    nul = out.find(b"\0", 1)
    if nul >= 0:
        text.append(out[1:nul])
        k = nul + 1
        if result <= letter and k < len(out) and out[k:k + 1] in (b"Z", b"D", b"K"):
            end = out.find(b"\0", k)
            text.append(out[k + 1:] if end < 0 else out[k + 1:end])
    return b"".join(text)


class Delivery:
    """One slot's running delivery (spawn.c's struct delivery)."""

    def __init__(self, pid: int, fdin: int, fdout: int):
        self.pid = pid
        self.fdin = fdin      # our read end of the child's pipe
        self.fdout = fdout    # our copy of the write end: EOF waits for the reaping
        self.status = 0
        self.output = bytearray()


def set_comm(name: bytes) -> None:
    """Rename this process in /proc (comm), as INTERFACE.md §3 asks of a
    forked child that runs another program's code."""
    try:
        with open("/proc/self/comm", "wb") as f:
            f.write(name)
    except OSError:
        pass


def child(message_fd: int, pipe_w: int, argv: list[bytes], env: dict[bytes, bytes],
          qmailremote: bytes | None) -> None:
    """The forked child: message on fd 0, the pipe on fds 1 and 2; never returns."""
    code = 111
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(message_fd, 0)
        os.dup2(pipe_w, 1)
        os.dup2(1, 2)
        os.closerange(3, 65536)
        if qmailremote is not None:
            argv = [qmailremote] + argv[1:]
            try:
                os.execvp(qmailremote, argv)
            except OSError as e:
                code = 111 if errors.is_temporary(e) else 100
        else:
            set_comm(b"qmail-remote")
            code = qmail_remote.run(argv, env, 0, 1)
    except BaseException:
        code = 111
    finally:
        os._exit(code)


class Spawner:
    """The command reader and the table of running deliveries."""

    def __init__(self, env: dict[bytes, bytes]):
        self.env = env
        self.d: dict[int, Delivery] = {}
        self.writing = True
        self.reading = True
        self.stage = 0
        self.delnum = 0
        self.fields = [bytearray(), bytearray(), bytearray()]
        self.qmailremote: bytes | None = None
        self.qmailremote_read = False

    def out(self, data: bytes) -> None:
        """okwrite(): after a write error, nothing more is written."""
        if not self.writing:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
        except OSError:
            self.writing = False

    def err(self, text: bytes) -> None:
        self.out(bytes((self.delnum,)) + text + b"\0")

    def getcmd(self) -> None:
        """Read what fd 0 has and act on every complete command."""
        try:
            data = os.read(0, 1024)
        except OSError:
            self.reading = False
            return
        if not data:
            self.reading = False
            return
        i = 0
        while i < len(data):
            if self.stage == 0:
                self.delnum = data[i]
                self.fields[0].clear()
                self.stage = 1
                i += 1
                continue
            field = self.fields[self.stage - 1]
            end = data.find(b"\0", i)
            if end < 0:
                field += data[i:]
                break
            field += data[i:end + 1]
            i = end + 1
            if self.stage < 3:
                self.fields[self.stage].clear()
                self.stage += 1
            else:
                self.docmd()
                self.stage = 0

    def docmd(self) -> None:
        """spawn.c docmd(): check one command and start its delivery."""
        messid, sender, recip = (bytes(f) for f in self.fields)
        if self.delnum >= auto.SPAWN:
            return self.err(ERR_DELNUM_BIG)
        if self.delnum in self.d:
            return self.err(ERR_DELNUM_USED)
        for i, c in enumerate(messid):
            if c and (i == 0 or c != 47) and not 48 <= c <= 57:
                return self.err(ERR_NONNUMERIC)
        if len(messid) > 100:
            return self.err(ERR_TOO_LONG)
        if messid[0] == 0:
            return self.err(ERR_TOO_SHORT)
        recip = recip[:-1]
        at = recip.rfind(b"@")
        if at < 0:
            return self.err(ERR_NO_HOST)
        try:
            message_fd = os.open(messid[:-1], os.O_RDONLY)
        except OSError:
            return self.err(ERR_OPEN)
        try:
            try:
                st = os.fstat(message_fd)
            except OSError:
                return self.err(ERR_FSTAT)
            if not stat.S_ISREG(st.st_mode):
                return self.err(ERR_TYPE)
            if st.st_uid != auto.UID_QMAILQ:
                return self.err(ERR_OWNER)   # qmailq has to be trusted
            try:
                pipe_r, pipe_w = os.pipe()
            except OSError:
                return self.err(ERR_PIPE)
            if not self.qmailremote_read:
                self.qmailremote = self.env.get(b"QMAILREMOTE") or None
                self.qmailremote_read = True
            argv = [b"qmail-remote", recip[at + 1:], sender[:-1], recip]
            try:
                pid = os.fork()
            except OSError:
                os.close(pipe_r)
                os.close(pipe_w)
                return self.err(ERR_FORK)
            if pid == 0:
                child(message_fd, pipe_w, argv, self.env, self.qmailremote)
            self.d[self.delnum] = Delivery(pid, pipe_r, pipe_w)
        finally:
            os.close(message_fd)

    def reap(self) -> None:
        """sigchld(): collect dead children; their pipes can now reach EOF."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for delivery in self.d.values():
                if delivery.pid == pid:
                    os.close(delivery.fdout)
                    delivery.fdout = -1
                    delivery.status = status
                    delivery.pid = 0

    def collect(self, slot: int) -> None:
        delivery = self.d[slot]
        try:
            data = os.read(delivery.fdin, 65536)
        except OSError:
            return   # read error on a readable pipe? be serious
        if data:
            room = READ_LIMIT - len(delivery.output)
            if room > 0:
                delivery.output += data[:room]
            return
        self.out(bytes((slot,)) + report(delivery.status, bytes(delivery.output)) + b"\0")
        os.close(delivery.fdin)
        del self.d[slot]

    def loop(self, wakeup_r: int) -> int:
        while True:
            if not self.reading and not self.d:
                return 0
            fds = [wakeup_r] + ([0] if self.reading else [])
            by_fd = {}
            for slot, delivery in self.d.items():
                fds.append(delivery.fdin)
                by_fd[delivery.fdin] = slot
            readable, _, _ = select.select(fds, [], [])
            if wakeup_r in readable:
                try:
                    os.read(wakeup_r, 4096)
                except BlockingIOError:
                    pass
            self.reap()
            if self.reading and 0 in readable:
                self.getcmd()
            for fd in readable:
                if fd in by_fd and by_fd[fd] in self.d:
                    self.collect(by_fd[fd])


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    """qmail-rspawn's main(); the exit code."""
    try:
        os.chdir(auto.QMAIL_HOME)
        os.chdir(b"queue/mess")
    except OSError:
        return 111
    try:
        os.fstat(2)
    except OSError:
        # qmail-start leaves fd 2 closed; hold it so no pipe of ours lands there
        os.open(os.devnull, os.O_WRONLY)
    qdns.preload()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    wakeup_r, wakeup_w = os.pipe()
    os.set_blocking(wakeup_r, False)
    os.set_blocking(wakeup_w, False)
    signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    # every start of qmail-send forgets all timeouts
    tcpto.clean(b"../lock/tcpto")
    tcpto.clean(b"../lock/tcpto6")
    spawner = Spawner(env)
    spawner.out(bytes((auto.SPAWN,)))
    return spawner.loop(wakeup_r)


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], dict(os.environb)))
