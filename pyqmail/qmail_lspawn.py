"""qmail-lspawn: run local deliveries for qmail-send (spec/local.md §2,
spec/send.md §7).

    qmail-lspawn defaultdelivery

Runs as root.  Commands arrive on fd 0 (`SLOT` `N/ID\\0` `SENDER\\0`
`RECIPIENT\\0`), reports leave on fd 1 (`SLOT` `K|Z|D` TEXT `\\0`).

qmail-lspawn finds the user (users/cdb, else its resident qmail-getpw) and
hands the delivery to a resident qmail-local: a child that has become that
user (uid and gid) and runs qmail-local's code for one message after another,
each with the message on fd 0 and the slot's report pipe on fds 1 and 2, its
exit code sent back as one byte.  A resident serves one user only, at most
MAX_USE deliveries, and ends when it has waited IDLE_SECONDS for work (or when
qmail-lspawn ends).  Without a resident (a command too big for one message, a
fork that failed, no resident qmail-getpw or no answer from it) the delivery
is a child of its own that looks the user up, becomes it and runs qmail-local
once, as before.
"""
import array
import os
import signal
import socket
import sys
import time

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

def nughde_from_cdb(local: bytes, path: bytes = b"users/cdb") -> bytes | None:
    """users/cdb lookup (spec/local.md §3.1); None when nothing matches.  Reads
    only the slots it needs: qmail-lspawn looks up every delivery."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        raise SystemExit(QLX_CDB) from None
    lower = b"!" + local.lower() + b"\0"
    try:
        wildchars = cdb.find(fd, b"", path)
        if wildchars is None:
            raise SystemExit(QLX_CDB)
        value = cdb.find(fd, lower, path)
        if value is not None:
            return value + b"\0"
        for i in range(len(lower) - 1, 0, -1):
            if i > 1 and lower[i - 1] not in wildchars:
                continue
            value = cdb.find(fd, lower[:i], path)
            if value is not None:
                return value + local[i - 1:] + b"\0"
    except (cdb.CdbError, OSError):
        raise SystemExit(QLX_CDB) from None
    finally:
        os.close(fd)
    return None


GETPW_FD = 3  # the resident qmail-getpw's socket, in a delivery child


def start_getpw(title) -> int:
    """Fork the resident qmail-getpw (uid qmailp): lookups without a process per
    delivery.  Returns qmail-lspawn's end of its socket, or -1 (then every
    lookup forks its own qmail-getpw, as before)."""
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


def send_with_fds(sock, data: bytes, fds: list[int], flags: int = 0) -> None:
    """One message with descriptors attached (socket.send_fds, which drops flags)."""
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))], flags)


def question(server, local: bytes, flags: int = 0):
    """Put local to the resident qmail-getpw on server; our end of the socket
    its answer (exit code byte + nughde) will come back on."""
    ours, theirs = socket.socketpair()
    with theirs:
        try:
            send_with_fds(server, local, [theirs.fileno()], flags)
        except OSError:
            ours.close()
            raise
    return ours


def ask_getpw(local: bytes) -> bytes | None:
    """nughde from the resident qmail-getpw on GETPW_FD; None if it is not there."""
    try:
        with socket.fromfd(GETPW_FD, socket.AF_UNIX, socket.SOCK_SEQPACKET) as server:
            ours = question(server, local)
        with ours:
            answer = b""
            while chunk := ours.recv(65536):
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


def user_fields(nughde: bytes) -> tuple[bytes, int, int, bytes, bytes, bytes] | None:
    """nughde's user, uid, gid, homedir, dash and ext, uid and gid read as
    qmail's scan_ulong() reads them; None when one of the six lacks its NUL."""
    fields = nughde.split(b"\0")
    if len(fields) < 7:
        return None
    user, uid, gid, homedir, dash, ext = fields[:6]
    return user, scan_ulong(uid), scan_ulong(gid), homedir, dash, ext


def local_argv(user: bytes, homedir: bytes, local: bytes, dash: bytes, ext: bytes,
               domain: bytes, sender: bytes, aliasempty: bytes) -> list[bytes]:
    """qmail-lspawn.c's execv arguments for bin/qmail-local (spec/local.md §2.3)."""
    return [b"bin/qmail-local", b"--", user, homedir, local, dash, ext, domain, sender, aliasempty]


def become(uid: int, gid: int) -> int | None:
    """Become uid:gid with no other groups; the exit code when that fails
    (112) or leaves root (113), else None."""
    try:
        prot.drop(uid, gid)
    except (OSError, OverflowError):
        return QLX_USAGE
    return QLX_ROOT if os.getuid() == 0 else None


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
    found = user_fields(nughde)
    if found is None:
        return QLX_USAGE
    user, uid, gid, homedir, dash, ext = found
    failed = become(uid, gid)
    if failed is not None:
        return failed
    return qmail_local.run(local_argv(user, homedir, local, dash, ext, domain, sender, aliasempty),
                           env, 0, 2, 1)


# --- the resident qmail-local -------------------------------------------------------

JOB_MAX = 65536     # a longer command is delivered by a child of its own
MAX_USE = 100       # deliveries per resident (Postfix's max_use)
MAX_IDLE = 32       # residents kept waiting for work, at most
IDLE_SECONDS = 10   # how long a resident waits for work


def resident(title, sock, uid: int, gid: int, aliasempty: bytes, env: dict[bytes, bytes]) -> int:
    """A resident qmail-local's life, in the child: become uid:gid, then
    deliver each job that arrives on sock (USER HOMEDIR LOCAL DASH EXT DOMAIN
    SENDER, NUL-separated, with the message and the report pipe attached) and
    answer with qmail-local's exit code.  Returns the code to exit with: 0 when
    qmail-lspawn is done with it, else what the delivery under way gets."""
    keep = sock.fileno()
    os.closerange(0, keep)
    os.closerange(keep + 1, 65536)
    os.open(b"/dev/null", os.O_RDWR)    # fd 0, and 1 and 2 below: between jobs
    os.dup2(0, 1)
    os.dup2(0, 2)
    null = os.open(b"/dev/null", os.O_RDWR | os.O_CLOEXEC)
    proctitle.rename(title, [b"bin/qmail-local"])
    failed = become(uid, gid)
    if failed is not None:
        return failed
    written = qmail_local.Written()   # its maildir messages, for their names
    while True:
        # the descriptors are put on 0-2 and closed before anything can exec
        job, fds, flags, _ = socket.recv_fds(sock, JOB_MAX, 2)
        if not job and not fds:
            return 0
        fields = job.split(b"\0")
        if len(fds) != 2 or len(fields) != 7 or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            return QLX_USAGE
        user, homedir, local, dash, ext, domain, sender = fields
        proctitle.rename(title, [b"bin/qmail-local", b"--", local + b"@" + domain])
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        os.dup2(fds[1], 2)
        os.close(fds[0])
        os.close(fds[1])
        try:
            os.chdir(auto.QMAIL_HOME)
        except OSError:
            return QLX_USAGE
        argv = local_argv(user, homedir, local, dash, ext, domain, sender, aliasempty)
        try:
            code = qmail_local.run(argv, env, 0, 2, 1, written)
        except BaseException:
            return errors.note_bug(2)   # and end: what is left of this process is not trusted
        for fd in (0, 1, 2):
            os.dup2(null, fd)   # the pipe reaches EOF, the message is let go
        os.chdir(b"/")          # and the user's home directory
        proctitle.rename(title, [b"bin/qmail-local"])
        sock.send(bytes((code,)))


class Resident:
    """qmail-lspawn's side of a resident qmail-local."""

    def __init__(self, key: tuple[int, int], pid: int, sock):
        self.key = key          # (uid, gid)
        self.pid = pid
        self.sock = sock
        self.delnum: int | None = None   # the slot it is delivering for
        self.used = 0
        self.since = 0.0        # idle since (time.monotonic())
        self.retired = False    # told to end: given no more work


class Question:
    """A delivery waiting for the resident qmail-getpw's answer."""

    def __init__(self, delnum: int, slot: spawn.Delivery, sock, fdmess: int, sender: bytes,
                 recipient: bytes, at: int):
        self.delnum = delnum
        self.slot = slot
        self.sock = sock
        self.fdmess = fdmess    # a copy of the message descriptor, ours to close
        self.sender = sender
        self.recipient = recipient
        self.at = at
        self.answer = b""


# --- the spawner ------------------------------------------------------------------------

class LocalSpawner(spawn.Spawner):
    """spawn.c with qmail-lspawn's lookup, residents, child and report."""

    def __init__(self, aliasempty: bytes, env: dict[bytes, bytes], getpw_fd: int = -1):
        super().__init__()
        self.getpw_fd = getpw_fd
        self.aliasempty = aliasempty
        self.env = env
        self.title = proctitle.Title()
        self.users_cdb = os.path.join(auto.QMAIL_HOME, b"users/cdb")
        self.residents: dict[int, Resident] = {}        # by our socket's fd
        self.idle: dict[tuple[int, int], list[Resident]] = {}
        self.questions: dict[int, Question] = {}        # by the answer socket's fd
        self.getpw = None   # a socket object on a copy of getpw_fd, once needed

    # the fork path: a child per delivery
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

    # the resident path
    def start(self, delnum, slot, fdmess, sender, recipient, at) -> None:
        """delivery_child()'s lookup here, then a resident for the user."""
        self.slots[delnum] = slot
        try:
            self.look_up(delnum, slot, fdmess, sender, recipient, at)
        except Exception:
            self.bug(delnum, slot)

    def bug(self, delnum, slot) -> None:
        """A bug of ours while starting a delivery: the delivery's report says so."""
        if self.slots.get(delnum) is slot and slot.wstat is None:
            if slot.fdout >= 0:
                errors.note_bug(slot.fdout)
            self.exited(delnum, slot, errors.EXIT_TEMPORARY << 8)

    def look_up(self, delnum, slot, fdmess, sender, recipient, at) -> None:
        local = recipient[:at]
        if not local:
            return self.exited(delnum, slot, 0)   # <>: the trash address
        try:
            nughde = nughde_from_cdb(local, self.users_cdb)
        except SystemExit as e:
            return self.exited(delnum, slot, e.code << 8)
        if nughde is not None:
            return self.dispatch(delnum, slot, fdmess, nughde, sender, recipient, at)
        if not self.ask(delnum, slot, fdmess, sender, recipient, at):
            self.fork(delnum, slot, fdmess, sender, recipient, at)

    def ask(self, delnum, slot, fdmess, sender, recipient, at) -> bool:
        """Put the local part to the resident qmail-getpw without waiting for
        it; False when that cannot be done."""
        if self.getpw_fd < 0:
            return False
        try:
            if self.getpw is None:
                self.getpw = socket.socket(fileno=os.dup(self.getpw_fd))
            ours = question(self.getpw, recipient[:at], socket.MSG_DONTWAIT)
        except OSError:
            return False
        try:
            copy = os.dup(fdmess)
        except OSError:
            ours.close()
            return False
        ours.setblocking(False)
        self.questions[ours.fileno()] = Question(delnum, slot, ours, copy, sender, recipient, at)
        return True

    def answered(self, fd: int) -> None:
        """Bytes of qmail-getpw's answer; at its end, the delivery goes on."""
        q = self.questions[fd]
        try:
            data = q.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and len(q.answer) < spawn.FIELD_LIMIT:
            q.answer += data
            return
        del self.questions[fd]
        q.sock.close()
        try:
            if data or not q.answer:
                # no answer (a local part too long for it), or too long a one:
                # the child of its own asks a qmail-getpw of its own
                self.fork(q.delnum, q.slot, q.fdmess, q.sender, q.recipient, q.at)
            elif q.answer[0]:
                self.exited(q.delnum, q.slot, q.answer[0] << 8)
            else:
                self.dispatch(q.delnum, q.slot, q.fdmess, q.answer[1:], q.sender, q.recipient, q.at)
        except Exception:
            self.bug(q.delnum, q.slot)
        finally:
            os.close(q.fdmess)

    def dispatch(self, delnum, slot, fdmess, nughde, sender, recipient, at) -> None:
        """Hand the delivery to a resident of the user nughde names."""
        found = user_fields(nughde)
        if found is None:
            return self.exited(delnum, slot, QLX_USAGE << 8)
        user, uid, gid, homedir, dash, ext = found
        if uid == 0:
            return self.exited(delnum, slot, QLX_ROOT << 8)
        job = b"\0".join((user, homedir, recipient[:at], dash, ext, recipient[at + 1:], sender))
        if len(job) <= JOB_MAX:
            worker = self.resident((uid, gid))
            if worker is not None and self.give(worker, job, fdmess, slot.fdout):
                worker.delnum = delnum
                os.close(slot.fdout)   # the resident holds it until it is done
                slot.fdout = -1
                return
        self.fork(delnum, slot, fdmess, sender, recipient, at)

    def give(self, worker: Resident, job: bytes, fdmess: int, fdout: int) -> bool:
        try:
            send_with_fds(worker.sock, job, [fdmess, fdout], socket.MSG_DONTWAIT)
        except OSError:
            self.retire(worker)
            return False
        return True

    def resident(self, key: tuple[int, int]) -> Resident | None:
        """An idle resident for uid:gid, else a new one; None if none can be had."""
        waiting = self.idle.get(key)
        if waiting:
            worker = waiting.pop()
            if not waiting:
                del self.idle[key]
            return worker
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            return None
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            code = 111
            try:
                code = resident(self.title, theirs, key[0], key[1], self.aliasempty, self.env)
            except BaseException:
                code = 111
            finally:
                os._exit(code)
        theirs.close()
        worker = Resident(key, pid, ours)
        self.residents[ours.fileno()] = worker
        return worker

    def heard(self, fd: int) -> None:
        """A resident's exit code for its delivery, or its end (EOF)."""
        worker = self.residents[fd]
        try:
            data = worker.sock.recv(16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        delnum = worker.delnum
        if data:
            worker.delnum = None
            worker.used += 1
            if worker.used >= MAX_USE or not self.reading:
                self.retire(worker)
            elif not worker.retired:
                worker.since = time.monotonic()
                self.idle.setdefault(worker.key, []).append(worker)
            wstat = data[0] << 8
        else:
            del self.residents[fd]
            self.unidle(worker)
            worker.sock.close()
            _, wstat = os.waitpid(worker.pid, 0)
            worker.delnum = None
        slot = self.slots.get(delnum) if delnum is not None else None
        if slot is not None:
            self.exited(delnum, slot, wstat)

    def unidle(self, worker: Resident) -> None:
        waiting = self.idle.get(worker.key)
        if waiting and worker in waiting:
            waiting.remove(worker)
            if not waiting:
                del self.idle[worker.key]

    def retire(self, worker: Resident) -> None:
        """No more work for this resident: it ends at EOF (and heard() reaps it).
        shutdown() of a Unix socket that is open cannot fail, even once the
        resident has gone."""
        self.unidle(worker)
        if not worker.retired:
            worker.retired = True
            worker.sock.shutdown(socket.SHUT_WR)

    def watched(self) -> dict:
        out = {fd: self.heard for fd in self.residents}
        out.update((fd, self.answered) for fd in self.questions)
        return out

    def housekeeping(self) -> int | None:
        """End residents idle too long (or beyond MAX_IDLE, or all of them once
        qmail-send is gone); the wait until the next one is due."""
        if not self.idle:
            return None
        waiting = sorted((w for ws in self.idle.values() for w in ws), key=lambda w: w.since)
        now = time.monotonic()
        for number, worker in enumerate(waiting):
            if (not self.reading or now - worker.since >= IDLE_SECONDS
                    or len(waiting) - number > MAX_IDLE):
                self.retire(worker)
        if not self.idle:
            return None
        first = min(w.since for ws in self.idle.values() for w in ws)
        return max(0, int((first + IDLE_SECONDS - now) * 1000) + 1)

    def busy(self) -> bool:
        return bool(self.residents)


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
