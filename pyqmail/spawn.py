"""The spawner front end shared by qmail-lspawn and qmail-rspawn (qmail's
spawn.c; spec/send.md §7).

Commands arrive on fd 0 (`SLOT` `N/ID\\0` `SENDER\\0` `RECIPIENT\\0`), reports
leave on fd 1 (`SLOT` `K|Z|D` TEXT `\\0`).  Each delivery has a pipe whose write
end becomes the delivering process's fds 1 and 2; the report is written once
the pipe is at EOF and the delivery's exit status is known.  By default each
delivery is a forked child with the message on fd 0; a subclass says what the
child runs (`child()`), how its output is kept (`add_output()`) and how exit
status and output become a report (`report()`), and may start a delivery some
other way (`start()`, with `watched()`, `housekeeping()` and `busy()` for
processes of its own, and `exited()` when a status is known).
"""
import abc
import gc
import os
import select
import stat

from pyqmail import auto

ERR_NOMEM = b"Zqmail-spawn out of memory. (#4.3.0)\n"
ERR_TOO_BIG = b"ZInternal error: delnum too big. (#4.3.5)\n"
ERR_IN_USE = b"ZInternal error: delnum in use. (#4.3.5)\n"
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

FIELD_LIMIT = 1 << 20  # a command field this long is treated as qmail's out-of-memory


def into_child_fds(message_fd: int, report_fd: int, keep_fd: int = -1) -> None:
    """fd 0 = the message, fds 1 and 2 = the report pipe (and keep_fd, if any, as
    fd 3), nothing else open: other deliveries' pipes must reach EOF when their
    own children finish."""
    if keep_fd >= 0:
        keep_fd = os.dup(keep_fd)   # above 2, out of the way of the dup2s below
    os.dup2(message_fd, 0)
    os.dup2(report_fd, 1)
    os.dup2(report_fd, 2)
    if keep_fd >= 0:
        os.dup2(keep_fd, 3)
        os.closerange(4, 65536)
    else:
        os.closerange(3, 65536)


class Delivery:
    """One slot's running delivery (spawn.c's struct delivery)."""

    def __init__(self, pid: int, fdin: int, fdout: int, pidfd: int):
        self.pid = pid
        self.fdin = fdin      # our read end of the child's pipe
        self.fdout = fdout    # our copy of the write end: closed once the status is known
                              # (or once a process of the subclass holds its own)
        self.pidfd = pidfd
        self.wstat: int | None = None
        self.output = b""
        self.eof = False      # the pipe has reached EOF


class Spawner(abc.ABC):
    """spawn.c's select loop; subclasses provide child(), report(), add_output()."""

    def __init__(self):
        self.slots: dict[int, Delivery] = {}
        self.reading = True
        self.writing = True
        self.stage = 0
        self.abort = False
        self.delnum = 0
        self.fields = [bytearray(), bytearray(), bytearray()]

    # the subclass's part
    @abc.abstractmethod
    def child(self, message_fd: int, report_fd: int, sender: bytes, recipient: bytes,
              at: int) -> int:
        """In the forked child: run the delivery; the child's exit code."""

    @abc.abstractmethod
    def report(self, wstat: int, output: bytes) -> bytes:
        """The `K`/`Z`/`D` text for a finished child's status and output."""

    def add_output(self, output: bytes, data: bytes) -> bytes:
        return output + data

    # spawn.c
    def write(self, data: bytes) -> None:
        """okwrite(): after one failed write, report nothing more but keep going."""
        if not self.writing:
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
        except OSError:
            self.writing = False

    def err(self, delnum: int, text: bytes) -> None:
        self.write(bytes((delnum,)) + text + b"\0")

    def getcmd(self) -> None:
        try:
            data = os.read(0, 1024)
        except InterruptedError:
            return
        except OSError:
            self.reading = False
            return
        if not data:
            self.reading = False
            return
        pos = 0
        while pos < len(data):
            if self.stage == 0:
                self.delnum = data[pos]
                for f in self.fields:
                    f.clear()
                self.stage = 1
                pos += 1
                continue
            field = self.fields[self.stage - 1]
            end = data.find(b"\0", pos)
            piece = data[pos:] if end < 0 else data[pos:end + 1]
            if len(field) + len(piece) > FIELD_LIMIT:
                self.abort = True
            else:
                field += piece
            pos += len(piece)
            if end < 0:
                break
            if self.stage == 3:
                self.docmd()
                self.abort = False
                self.stage = 0
            else:
                self.stage += 1

    def docmd(self) -> None:
        """Check one command (spec/send.md §7.5, in qmail's order) and fork its child."""
        delnum = self.delnum
        messid, sender, recipient = (bytes(f) for f in self.fields)
        if self.abort:
            return self.err(delnum, ERR_NOMEM)
        if delnum >= auto.SPAWN:
            return self.err(delnum, ERR_TOO_BIG)
        if delnum in self.slots:
            return self.err(delnum, ERR_IN_USE)
        for i, ch in enumerate(messid):
            if ch and (i == 0 or ch != 0x2f) and not 0x30 <= ch <= 0x39:
                return self.err(delnum, ERR_NONNUMERIC)
        if len(messid) > 100:
            return self.err(delnum, ERR_TOO_LONG)
        if messid[:1] in (b"", b"\0"):
            return self.err(delnum, ERR_TOO_SHORT)
        messid = messid[:-1]
        sender = sender[:-1].split(b"\0", 1)[0]
        recipient = recipient[:-1]
        at = recipient.rfind(b"@")
        if at < 0:
            return self.err(delnum, ERR_NO_HOST)
        try:
            fdmess = os.open(messid, os.O_RDONLY)
        except OSError:
            return self.err(delnum, ERR_OPEN)
        try:
            try:
                st = os.fstat(fdmess)
            except OSError:
                return self.err(delnum, ERR_FSTAT)
            if not stat.S_ISREG(st.st_mode):
                return self.err(delnum, ERR_TYPE)
            if st.st_uid != auto.UID_QMAILQ:
                return self.err(delnum, ERR_OWNER)   # qmailq has to be trusted
            try:
                fdin, fdout = os.pipe()
            except OSError:
                return self.err(delnum, ERR_PIPE)
            self.start(delnum, Delivery(0, fdin, fdout, -1), fdmess, sender, recipient, at)
        finally:
            os.close(fdmess)

    def start(self, delnum: int, slot: Delivery, fdmess: int, sender: bytes, recipient: bytes,
              at: int) -> None:
        """Begin the delivery of a checked command (fdmess is closed after
        this returns): by default a forked child running child()."""
        self.fork(delnum, slot, fdmess, sender, recipient, at)

    def fork(self, delnum: int, slot: Delivery, fdmess: int, sender: bytes, recipient: bytes,
             at: int) -> None:
        """spawn.c's fork: the slot's child runs child() with the message and
        the write end of the slot's pipe; ERR_FORK when there is none."""
        try:
            pid = os.fork()
        except OSError:
            self.slots.pop(delnum, None)
            os.close(slot.fdin)
            os.close(slot.fdout)
            return self.err(delnum, ERR_FORK)
        if pid == 0:
            # a short life: no collector walking (and copying) the parent's pages
            gc.disable()
            code = 111
            try:
                os.close(slot.fdin)
                code = self.child(fdmess, slot.fdout, sender, recipient, at)
            except BaseException:
                code = 111
            finally:
                os._exit(code)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        slot.pid = pid
        slot.pidfd = pidfd
        self.slots[delnum] = slot

    def exited(self, delnum: int, slot: Delivery, wstat: int) -> None:
        """The delivery's status is known: its report goes out once its pipe is at
        EOF too."""
        slot.wstat = wstat
        if slot.fdout >= 0:
            os.close(slot.fdout)
            slot.fdout = -1
        self.finish(delnum, slot)

    def finish(self, delnum: int, slot: Delivery) -> None:
        if slot.wstat is None or not slot.eof:
            return
        self.err(delnum, self.report(slot.wstat, slot.output))
        os.close(slot.fdin)
        del self.slots[delnum]

    # hooks for a spawner that keeps processes of its own besides the slots'
    def watched(self) -> dict:
        """Further descriptors to poll for input, each with what to call (with
        the descriptor) then."""
        return {}

    def housekeeping(self) -> int | None:
        """Run before each poll; how long (ms) the poll may wait, None for ever."""
        return None

    def busy(self) -> bool:
        """Whether processes of the subclass's own are still to be waited for."""
        return False

    def reap(self, delnum: int, slot: Delivery, block: bool) -> None:
        pid, wstat = os.waitpid(slot.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        if slot.pidfd >= 0:
            os.close(slot.pidfd)
            slot.pidfd = -1
        self.exited(delnum, slot, wstat)

    def loop(self) -> int:
        """Until fd 0 is at EOF and no child is left."""
        # everything imported so far stays out of the collector's way, so the
        # forked children share the parent's pages instead of copying them
        gc.freeze()
        while True:
            timeout = self.housekeeping()
            if not self.reading and not self.slots and not self.busy():
                return 0
            poller = select.poll()
            watch = {}
            if self.reading:
                poller.register(0, select.POLLIN)
            # a child without a pidfd is polled for once a second
            unwatched = False
            for delnum, slot in self.slots.items():
                if not slot.eof:
                    poller.register(slot.fdin, select.POLLIN)
                    watch[slot.fdin] = (delnum, False)
                if slot.pidfd >= 0:
                    poller.register(slot.pidfd, select.POLLIN)
                    watch[slot.pidfd] = (delnum, True)
                elif slot.pid and slot.wstat is None:
                    unwatched = True
            others = self.watched()
            for fd in others:
                poller.register(fd, select.POLLIN)
            if unwatched and (timeout is None or timeout > 1000):
                timeout = 1000
            try:
                events = poller.poll(timeout)
            except InterruptedError:
                continue
            if unwatched:
                for delnum, slot in list(self.slots.items()):
                    if slot.pid and slot.wstat is None and slot.pidfd < 0:
                        self.reap(delnum, slot, block=False)
            for fd, _ in events:
                what = watch.get(fd)
                if what is None:
                    if fd == 0:
                        self.getcmd()
                    elif fd in others:
                        others[fd](fd)
                    continue
                delnum, is_pidfd = what
                slot = self.slots.get(delnum)
                if slot is None:
                    continue
                if is_pidfd:
                    if slot.pidfd == fd:
                        self.reap(delnum, slot, block=True)
                    continue
                if slot.eof:
                    continue
                try:
                    data = os.read(slot.fdin, 65536)
                except OSError:
                    continue
                if data:
                    slot.output = self.add_output(slot.output, data)
                    continue
                slot.eof = True
                self.finish(delnum, slot)
