"""qmail-lspawn: run local deliveries for qmail-send (spec/local.md §2,
spec/send.md §7).

    qmail-lspawn defaultdelivery

Runs as root.  Commands arrive on fd 0 (`SLOT` `N/ID\\0` `SENDER\\0`
`RECIPIENT\\0`), reports leave on fd 1 (`SLOT` `K|Z|D` TEXT `\\0`).  Each
delivery is a forked child that finds the user (users/cdb, else qmail-getpw),
becomes that user and runs qmail-local's code in-process.
"""
import os
import select
import signal
import stat
import sys

from pyqmail import auto, cdb, environ, errors, prot, proctitle, qmail_local

# qlx.h: the delivery child's own exit codes
QLX_USAGE = 112
QLX_ROOT = 113
QLX_NFS = 115
QLX_NOALIAS = 116
QLX_CDB = 117
QLX_SYS = 118
QLX_NOMEM = 119
QLX_EXECSOFT = 120
QLX_EXECPW = 121
QLX_EXECHARD = 126

FIXED_REPORTS = {
    QLX_CDB: b"ZTrouble reading users/cdb in qmail-lspawn.\n",
    QLX_NOMEM: b"ZOut of memory in qmail-lspawn.\n",
    QLX_SYS: b"ZTemporary failure in qmail-lspawn.\n",
    QLX_NOALIAS: b"ZUnable to find alias user!\n",
    QLX_ROOT: b"ZNot allowed to perform deliveries as root.\n",
    QLX_USAGE: b"ZInternal qmail-lspawn bug.\n",
    QLX_NFS: b"ZNFS failure in qmail-local.\n",
    QLX_EXECHARD: b"DUnable to run qmail-local.\n",
    QLX_EXECSOFT: b"ZUnable to run qmail-local.\n",
    QLX_EXECPW: b"ZUnable to run qmail-getpw.\n",
}
CRASHED = b"Zqmail-local crashed.\n"
TEMPORARY_CODES = frozenset((111, 71, 74, 75))

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

TRUNCREPORT = 3000
TRUNCMESS = b"\nError report too long, sorry.\n"
FIELD_LIMIT = 1 << 20  # a command field this long is treated as qmail's out-of-memory


def report_text(wstat: int, output: bytes) -> bytes:
    """report(): the K/Z/D text for a finished delivery child."""
    if os.WIFSIGNALED(wstat):
        return CRASHED
    code = os.WEXITSTATUS(wstat)
    if code in FIXED_REPORTS:
        return FIXED_REPORTS[code]
    if code in TEMPORARY_CODES:
        letter = b"Z"
    elif code == 0:
        letter = b"K"
    else:
        letter = b"D"
    return letter + output.split(b"\0", 1)[0]


def add_output(output: bytes, data: bytes) -> bytes:
    """Collect report bytes; past 3000 keep the first 2966 plus qmail's notice."""
    output += data
    if len(output) > TRUNCREPORT:
        output = output[:TRUNCREPORT - len(TRUNCMESS) - 3] + TRUNCMESS
    return output


# --- the delivery child ------------------------------------------------------------

def nughde_from_cdb(local: bytes) -> bytes | None:
    """users/cdb lookup (spec/local.md §3.1); None when nothing matches."""
    try:
        db = cdb.open_cdb(b"users/cdb")
    except (cdb.CdbError, OSError):
        raise SystemExit(QLX_CDB) from None
    if db is None:
        return None
    lower = b"!" + local.lower() + b"\0"
    try:
        wildchars = db.get(b"")
        if wildchars is None:
            raise SystemExit(QLX_CDB)
        value = db.get(lower)
        if value is not None:
            return value + b"\0"
        for i in range(len(lower) - 1, 0, -1):
            if i > 1 and lower[i - 1] not in wildchars:
                continue
            value = db.get(lower[:i])
            if value is not None:
                return value + local[i - 1:] + b"\0"
    except cdb.CdbError:
        raise SystemExit(QLX_CDB) from None
    return None


def nughde_from_getpw(local: bytes) -> bytes:
    """Run bin/qmail-getpw LOCAL as qmailp/nofiles and read its answer."""
    try:
        r, w = os.pipe()
        pid = os.fork()
    except OSError:
        raise SystemExit(QLX_SYS) from None
    if pid == 0:
        code = QLX_EXECPW
        try:
            os.close(r)
            code = QLX_USAGE
            prot.drop(auto.UID_QMAILP, auto.GID_NOFILES)
            code = QLX_SYS
            os.dup2(w, 1)
            code = QLX_EXECPW
            os.execv(b"bin/qmail-getpw", [b"bin/qmail-getpw", local])
        except BaseException:
            pass
        os._exit(code)
    os.close(w)
    chunks = []
    try:
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        raise SystemExit(QLX_SYS) from None
    finally:
        os.close(r)
    _, wstat = os.waitpid(pid, 0)
    if os.WIFSIGNALED(wstat):
        raise SystemExit(QLX_SYS)
    if os.WEXITSTATUS(wstat) != 0:
        raise SystemExit(os.WEXITSTATUS(wstat))
    return b"".join(chunks)


def scan_ulong(value: bytes) -> int:
    end = 0
    while end < len(value) and 48 <= value[end] <= 57:
        end += 1
    return int(value[:end]) if end else 0


def delivery_child(lib, message_fd: int, report_fd: int, sender: bytes, recipient: bytes,
                   at: int, aliasempty: bytes, env: dict[bytes, bytes]) -> int:
    """spawn()'s child: find the user, become it, run qmail-local; the exit code."""
    local = recipient[:at]
    domain = recipient[at + 1:]
    proctitle.rename(lib, [b"bin/qmail-local", b"--", local + b"@" + domain])
    # Only the message and this delivery's report pipe stay open: other
    # deliveries' pipes must reach EOF when their own children finish.
    os.dup2(message_fd, 0)
    os.dup2(report_fd, 1)
    os.dup2(report_fd, 2)
    os.closerange(3, 65536)
    if not local:
        return 0  # <>: the trash address
    try:
        os.chdir(auto.QMAIL_HOME)
    except OSError:
        return QLX_USAGE
    try:
        nughde = nughde_from_cdb(local)
        if nughde is None:
            nughde = nughde_from_getpw(local)
    except SystemExit as e:
        return e.code
    fields = nughde.split(b"\0")
    if len(fields) < 7:
        return QLX_USAGE
    user, uid, gid, homedir, dash, ext = fields[:6]
    uid = scan_ulong(uid)
    gid = scan_ulong(gid)
    argv = [b"bin/qmail-local", b"--", user, homedir, local, dash, ext, domain, sender, aliasempty]
    try:
        prot.drop(uid, gid)
    except OSError:
        return QLX_USAGE
    if os.getuid() == 0:
        return QLX_ROOT
    return qmail_local.run(argv, env, 0, 2, 1)


# --- the spawner ------------------------------------------------------------------------

class Delivery:
    def __init__(self, pid: int, fdin: int, fdout: int, pidfd: int):
        self.pid = pid
        self.fdin = fdin
        self.fdout = fdout
        self.pidfd = pidfd
        self.wstat: int | None = None
        self.output = b""


class Spawner:
    """The select loop of spawn.c for qmail-lspawn."""

    def __init__(self, aliasempty: bytes, env: dict[bytes, bytes]):
        self.aliasempty = aliasempty
        self.env = env
        self.lib = proctitle.libc()
        self.slots: dict[int, Delivery] = {}
        self.reading = True
        self.writing = True
        self.stage = 0
        self.abort = False
        self.delnum = 0
        self.fields = [bytearray(), bytearray(), bytearray()]

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
                return self.err(delnum, ERR_OWNER)
            try:
                fdin, fdout = os.pipe()
            except OSError:
                return self.err(delnum, ERR_PIPE)
            try:
                pid = os.fork()
            except OSError:
                os.close(fdin)
                os.close(fdout)
                return self.err(delnum, ERR_FORK)
            if pid == 0:
                code = QLX_SYS
                try:
                    code = delivery_child(self.lib, fdmess, fdout, sender, recipient, at,
                                          self.aliasempty, self.env)
                except BaseException:
                    code = errors.note_bug(2)
                finally:
                    os._exit(code)
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = -1
            self.slots[delnum] = Delivery(pid, fdin, fdout, pidfd)
        finally:
            os.close(fdmess)

    def reap(self, slot: Delivery, block: bool) -> None:
        pid, wstat = os.waitpid(slot.pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        slot.wstat = wstat
        os.close(slot.fdout)
        slot.fdout = -1
        if slot.pidfd >= 0:
            os.close(slot.pidfd)
            slot.pidfd = -1

    def loop(self) -> int:
        while True:
            if not self.reading and not self.slots:
                return 0
            poller = select.poll()
            watch = {}
            if self.reading:
                poller.register(0, select.POLLIN)
                watch[0] = None
            for delnum, slot in self.slots.items():
                poller.register(slot.fdin, select.POLLIN)
                watch[slot.fdin] = (delnum, b"in")
                if slot.pidfd >= 0:
                    poller.register(slot.pidfd, select.POLLIN)
                    watch[slot.pidfd] = (delnum, b"pid")
            # without a pidfd a child is polled for once a second
            timeout = 1000 if any(s.pidfd < 0 and s.fdout >= 0 for s in self.slots.values()) else None
            events = poller.poll(timeout)
            for delnum, slot in list(self.slots.items()):
                if slot.pidfd < 0 and slot.fdout >= 0:
                    self.reap(slot, block=False)
            for fd, _ in events:
                what = watch.get(fd)
                if what is None:
                    if fd == 0:
                        self.getcmd()
                    continue
                delnum, kind = what
                slot = self.slots.get(delnum)
                if slot is None:
                    continue
                if kind == b"pid":
                    if slot.pidfd == fd:
                        self.reap(slot, block=True)
                    continue
                try:
                    data = os.read(slot.fdin, 4096)
                except OSError:
                    continue
                if data:
                    slot.output = add_output(slot.output, data)
                    continue
                if slot.fdout >= 0:
                    continue  # cannot happen: we hold the write end until reaped
                self.err(delnum, report_text(slot.wstat, slot.output))
                os.close(slot.fdin)
                del self.slots[delnum]


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    if len(argv) < 2:
        return 100
    try:
        os.chdir(auto.QMAIL_HOME)
        os.chdir(b"queue/mess")
    except OSError:
        return 111
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    spawner = Spawner(argv[1], env)
    spawner.write(bytes((auto.SPAWN,)))
    return spawner.loop()


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
