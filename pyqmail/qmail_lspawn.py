"""qmail-lspawn: run local deliveries for qmail-send (spec/local.md §2,
spec/send.md §7).

    qmail-lspawn defaultdelivery

Runs as root.  Commands arrive on fd 0 (`SLOT` `N/ID\\0` `SENDER\\0`
`RECIPIENT\\0`), reports leave on fd 1 (`SLOT` `K|Z|D` TEXT `\\0`).  Each
delivery is a forked child that finds the user (users/cdb, else qmail-getpw),
becomes that user and runs qmail-local's code in-process.
"""
import os
import signal
import sys

from pyqmail import auto, cdb, environ, errors, prot, proctitle, qmail_getpw, qmail_local, spawn

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

TRUNCREPORT = 3000
TRUNCMESS = b"\nError report too long, sorry.\n"


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


GETPW_FD = 3  # the resident qmail-getpw's socket, in a delivery child


def start_getpw(title) -> int:
    """Fork the resident qmail-getpw (uid qmailp): lookups without a process per
    delivery.  Returns qmail-lspawn's end of its socket, or -1 (then every
    lookup forks its own qmail-getpw, as before)."""
    import socket
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
    except OSError:
        return -1
    if pid == 0:
        try:
            ours.close()
            os.closerange(0, theirs.fileno())
            os.closerange(theirs.fileno() + 1, 65536)
            proctitle.rename(title, [b"qmail-getpw"])
            prot.drop(auto.UID_QMAILP, auto.GID_NOFILES)
            qmail_getpw.serve(theirs)
        finally:
            os._exit(0)
    theirs.close()
    return ours.detach()


def ask_getpw(local: bytes) -> bytes | None:
    """nughde from the resident qmail-getpw on GETPW_FD; None if it is not there."""
    import array
    import socket
    try:
        a, b = socket.socketpair()
        with a:
            try:
                with socket.fromfd(GETPW_FD, socket.AF_UNIX, socket.SOCK_SEQPACKET) as server:
                    server.sendmsg([local], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                              array.array("i", [b.fileno()]))])
            finally:
                b.close()
            answer = b""
            while chunk := a.recv(65536):
                answer += chunk
    except OSError:
        return None
    if not answer:
        return None
    if answer[0]:
        raise SystemExit(answer[0])
    return answer[1:]


def nughde_from_getpw(title, local: bytes) -> bytes:
    """qmail-getpw LOCAL as qmailp/nofiles, and its answer: from the resident
    qmail-getpw, else a forked child (renamed qmail-getpw) running its code."""
    answer = ask_getpw(local)
    if answer is not None:
        return answer
    try:
        r, w = os.pipe()
        pid = os.fork()
    except OSError:
        raise SystemExit(QLX_SYS) from None
    if pid == 0:
        code = QLX_USAGE
        try:
            os.close(r)
            proctitle.rename(title, [b"qmail-getpw", local])
            prot.drop(auto.UID_QMAILP, auto.GID_NOFILES)
            code = QLX_SYS
            code = qmail_getpw.run([b"qmail-getpw", local], w)
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


def delivery_child(title, message_fd: int, report_fd: int, sender: bytes, recipient: bytes,
                   at: int, aliasempty: bytes, env: dict[bytes, bytes], getpw_fd: int = -1) -> int:
    """spawn()'s child: find the user, become it, run qmail-local; the exit code."""
    local = recipient[:at]
    domain = recipient[at + 1:]
    proctitle.rename(title, [b"bin/qmail-local", b"--", local + b"@" + domain])
    spawn.into_child_fds(message_fd, report_fd, getpw_fd)
    if not local:
        return 0  # <>: the trash address
    try:
        os.chdir(auto.QMAIL_HOME)
    except OSError:
        return QLX_USAGE
    try:
        nughde = nughde_from_cdb(local)
        if nughde is None:
            nughde = nughde_from_getpw(title, local)
    except SystemExit as e:
        return e.code
    finally:
        if getpw_fd >= 0:
            os.close(GETPW_FD)  # the user's programs get nothing but fds 0-2
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

class LocalSpawner(spawn.Spawner):
    """spawn.c with qmail-lspawn's child and report."""

    def __init__(self, aliasempty: bytes, env: dict[bytes, bytes], getpw_fd: int = -1):
        super().__init__()
        self.getpw_fd = getpw_fd
        self.aliasempty = aliasempty
        self.env = env
        self.title = proctitle.Title()

    def child(self, message_fd, report_fd, sender, recipient, at) -> int:
        try:
            return delivery_child(self.title, message_fd, report_fd, sender, recipient, at,
                                  self.aliasempty, self.env, self.getpw_fd)
        except BaseException:
            return errors.note_bug(2)

    def report(self, wstat: int, output: bytes) -> bytes:
        return report_text(wstat, output)

    def add_output(self, output: bytes, data: bytes) -> bytes:
        return add_output(output, data)


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    if len(argv) < 2:
        return 100
    try:
        os.chdir(auto.QMAIL_HOME)
        os.chdir(b"queue/mess")
    except OSError:
        return 111
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    spawner = LocalSpawner(argv[1], env)
    spawner.getpw_fd = start_getpw(spawner.title)
    spawner.write(bytes((auto.SPAWN,)))
    return spawner.loop()


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
