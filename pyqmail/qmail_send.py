"""qmail-send: the queue manager (spec/send.md, spec/queue.md §4-7).

fd 0 log; fd 1/2 commands to / results from qmail-lspawn; fd 3/4 the same for
qmail-rspawn; fd 5/6 requests to / replies from qmail-clean.  One process, one
poll loop, as qmail's: preprocess todo/, run delivery passes within the
concurrency limits, retry on qmail's schedule, bounce, clean up.

Every queue of due work is a heap, so each step costs O(log n) in the number of
messages waiting, and a queue full of deferred mail does not slow new mail.
"""
import errno
import fcntl
import heapq
import math
import os
import select
import signal
import sys
import time

from pyqmail import auto, control, date822, environ, errors, fdio, quote

LOCAL, REMOTE = 0, 1
CHANNEL_NAME = (b"local", b"remote")
CHANSKIP = (10, 20)
TODO_RESCAN = 1500
SLEEP_FOREVER = 86400
CLEANUP_INTERVAL = 76431
SYSTEM_RETRY = 123
OSSIFIED = 129600
REPORT_MAX = 10000
TOO_OLD = b"I'm not going to try again; this message has been in the queue too long.\n"

SAFE = bytes(95 if (c < 0x21 or c > 0x7E or c == 0x25) else c for c in range(256))
SAFE = SAFE[:10] + b"/" + SAFE[11:]  # LF -> /



def safe(text: bytes) -> bytes:
    """send.md §9: LF -> /, %, bytes < 0x21 and > 0x7E -> _."""
    return text.translate(SAFE)




def read_file(path: bytes, with_mtime: bool = False):
    """The whole file (and its mtime, if asked), read with os.read: the io
    stack's fstat, isatty and lseek are three more system calls per file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        mtime = os.fstat(fd).st_mtime if with_mtime else None
        data = fdio.read_all(fd)
    finally:
        os.close(fd)
    return (data, mtime) if with_mtime else data


def stat_state(path: bytes) -> bool | None:
    """True if path exists, False on ENOENT, None on any other stat error."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    return True


def next_retry(birth: float, now: float, channel: int) -> float:
    """send.md §5.2: birth + (floor(sqrt(age)) + chanskip)^2."""
    root = 0 if birth > now else math.isqrt(int(now - birth))
    return birth + (root + CHANSKIP[channel]) ** 2


class Log:
    """The activity log on fd 0, errors ignored.  A line is written at once,
    except while `held` (a pass of the main loop, which ends with flush()):
    then the pass's lines go out together, in order, in one write."""

    def __init__(self, fd: int = 0):
        self.fd = fd
        self.held = False
        self.pending: list[bytes] = []

    def line(self, text: bytes) -> None:
        self.pending.append(text + b"\n")
        if not self.held:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending.clear()
        try:
            while data:  # a signal may cut a write short: finish the lines
                written = os.write(self.fd, data)
                if written <= 0:
                    break
                data = data[written:]
        except OSError:
            pass


class Config:
    """qmail-send's control files (send.md §2)."""

    def __init__(self, ctl: control.Control):
        me = ctl.me
        self.lifetime = ctl.int(b"queuelifetime", 604800)
        self.concurrency = [min(ctl.int(b"concurrencylocal", 10), 65535),
                            min(ctl.int(b"concurrencyremote", 20), 65535)]
        self.envnoathost = ctl.line(b"envnoathost", b"envnoathost", use_me=True)
        self.bouncefrom = ctl.line(b"bouncefrom", b"MAILER-DAEMON")
        self.bouncehost = ctl.line(b"bouncehost", b"bouncehost", use_me=True)
        self.doublebounceto = ctl.line(b"doublebounceto", b"postmaster")
        self.doublebouncehost = ctl.line(b"doublebouncehost", b"doublebouncehost", use_me=True)
        self.percenthack = {x.lower() for x in ctl.list(b"percenthack") or []}
        locals_ = ctl.list(b"locals", use_me=True)
        if locals_ is None:
            raise control.ControlError(ctl.path(b"locals"), b"neither locals nor me")
        self.set_locals(locals_)
        self.set_virtualdomains(ctl.list(b"virtualdomains") or [])
        self.me = me

    def set_locals(self, entries: list[bytes]) -> None:
        self.locals = {x.lower() for x in entries}

    def set_virtualdomains(self, entries: list[bytes]) -> None:
        table = {}
        for line in entries:
            key, colon, value = line.partition(b":")
            if colon:
                table[key.lower()] = value  # a repeated key: the later line wins
        self.virtualdomains = table

    def virtual(self, addr: bytes, with_address: bool = True) -> bytes | None:
        """The virtualdomains value for addr (send.md §4.2 step 4), or None."""
        vd = self.virtualdomains
        if not vd:
            return None
        domain = addr[addr.rfind(b"@") + 1:].lower()
        if with_address and addr.lower() in vd:
            return vd[addr.lower()]
        if domain in vd:
            return vd[domain]
        i = domain.find(b".")
        while i >= 0:
            if domain[i:] in vd:
                return vd[domain[i:]]
            i = domain.find(b".", i + 1)
        return vd.get(b"")

    def rewrite(self, addr: bytes) -> tuple[int, bytes]:
        """send.md §4.2: (channel, address as stored in the channel file)."""
        if b"@" not in addr:
            addr = addr + b"@" + self.envnoathost
        at = addr.rfind(b"@")
        while addr[at + 1:].lower() in self.percenthack and b"%" in addr[:at]:
            local = addr[:at]
            pct = local.rfind(b"%")
            addr = local[:pct] + b"@" + local[pct + 1:]
            at = addr.rfind(b"@")
        if addr[at + 1:].lower() in self.locals:
            return LOCAL, addr
        value = self.virtual(addr)
        if value is None or not value:
            return REMOTE, addr
        return LOCAL, value + b"-" + addr

    def unvirtual(self, addr: bytes) -> bytes:
        """send.md §8.2: the recipient with its virtual-domain prefix removed."""
        if b"@" not in addr:
            return addr  # qmail's stripvdomprepend(): no @, no lookup
        value = self.virtual(addr, with_address=False)
        if value and addr.startswith(value + b"-"):
            return addr[len(value) + 1:]
        return addr


def verp(sender: bytes, recipient: bytes) -> bytes:
    """send.md §7.3: PRE@HOST-@[] to BOX@DOM -> PRE BOX=DOM@HOST."""
    if not sender.endswith(b"-@[]"):
        return sender
    core = sender[:-4]
    at = core.rfind(b"@")
    if at < 0:
        return sender
    rat = recipient.rfind(b"@")
    if rat < 0:
        return sender  # qmail's senderadd(): no @ in the recipient, no VERP
    return core[:at] + recipient[:rat] + b"=" + recipient[rat + 1:] + b"@" + core[at + 1:]


def bounce_block(recipient: bytes, text: bytes) -> bytes:
    """send.md §8.2: `<ADDR>:\\n` + TEXT, no empty line inside, one blank after."""
    text = text.split(b"\0", 1)[0]
    if text and not text.endswith(b"\n"):
        text += b"\n"
    block = bytearray(b"<" + recipient.replace(b"\n", b"_") + b">:\n" + text)
    for i in range(len(block) - 2, 0, -1):
        if block[i] == 10 and block[i - 1] == 10:
            block[i] = 0x2F
    return bytes(block) + b"\n"


class Delivery:
    __slots__ = ("job", "number", "offset", "recipient")

    def __init__(self, job, number, offset, recipient):
        self.job, self.number, self.offset, self.recipient = job, number, offset, recipient


class Job:
    """One pass over one message's channel file, and the deliveries it started."""

    def __init__(self, ident: int, channel: int, path: bytes, records, sender: bytes,
                 retry: float, too_old: bool):
        self.ident, self.channel, self.path = ident, channel, path
        self.records = records          # [(offset, record bytes)]
        self.position = 0
        self.sender, self.retry, self.too_old = sender, retry, too_old
        self.open = True                # the pass
        self.complete = False           # the pass reached end of file cleanly
        self.outstanding = 0
        self.all_done = True            # every delivery got K or D
        self.abandoned = False          # the pass was cut short by the exit


class Spawner:
    """qmail-send's view of qmail-lspawn or qmail-rspawn."""

    def __init__(self, channel: int, out_fd: int, in_fd: int):
        self.channel, self.out_fd, self.in_fd = channel, out_fd, in_fd
        self.alive = True
        self.pending = b""
        self.inbuf = bytearray()
        self.slots: list[Delivery | None] = []


class Send:
    """The state of one qmail-send run, working in QMAILHOME/queue."""

    def __init__(self, cfg: Config, qmail_home: bytes, log: Log, split: int,
                 spawners: list[Spawner], clean_out: int, clean_in: int, env=None):
        self.cfg, self.qmail_home, self.log, self.split = cfg, qmail_home, log, split
        self.spawners = spawners
        self.clean_out, self.clean_in = clean_out, clean_in
        self.env = env or {}
        self.queues: list[list] = [[], []]      # (due, ident) per channel
        self.queued: list[set] = [set(), set()]
        self.done: list = []
        self.retry_stat: list = []
        self.jobs: list[Job | None] = [None, None]  # the open pass per channel
        self.job_count = 0
        self.delivery_number = 0
        self.exiting = False
        self.flag_alarm = self.flag_hup = False
        self.clean_ok = True
        self.trigger_fd = -1
        self.trigger_wfd = -1
        self.todo_names: list[bytes] | None = None
        self.next_todo = 0.0
        self.cleanup_names: list[tuple[int, bytes]] | None = None
        self.next_cleanup = 0.0
        self.wakeup_fd = -1  # signals arrive here too, so poll returns (qmail's EINTR)

    # paths
    def part(self, ident: int) -> int:
        return ident % self.split

    def path(self, kind: bytes, ident: int) -> bytes:
        if kind in (b"todo", b"intd", b"bounce"):
            return b"%s/%d" % (kind, ident)
        return b"%s/%d/%d" % (kind, self.part(ident), ident)

    # status
    def status(self) -> None:
        busy = [sum(1 for d in s.slots if d is not None) for s in self.spawners]
        line = b"status: local %d/%d remote %d/%d" % (
            busy[0], self.cfg.concurrency[0], busy[1], self.cfg.concurrency[1])
        self.log.line(line + (b" exitasap" if self.exiting else b""))

    # qmail-clean
    def clean(self, request: bytes) -> bool:
        if not self.clean_ok:
            return False
        try:
            os.write(self.clean_out, request + b"\0")
            reply = os.read(self.clean_in, 1)
        except OSError:
            reply = b""
        if not reply:
            self.clean_ok = False
            self.log.line(b"alert: oh no! lost qmail-clean connection! dying...")
            self.exiting = True
            return False
        if reply != b"+":
            self.log.line(b"warning: qmail-clean unable to clean up " + request)
            return False
        return True

    # trigger and todo
    def open_trigger(self) -> None:
        for fd in (self.trigger_fd, self.trigger_wfd):
            if fd >= 0:
                os.close(fd)
        self.trigger_fd = self.trigger_wfd = -1
        try:
            self.trigger_fd = os.open(b"lock/trigger", os.O_RDONLY | os.O_NONBLOCK)
            # Linux reports a FIFO without writers readable forever: hold one
            self.trigger_wfd = os.open(b"lock/trigger", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            pass

    def start_todo_scan(self, now: float) -> None:
        self.open_trigger()
        try:
            names = os.listdir(b"todo")
        except OSError:
            self.log.line(b"alert: unable to opendir todo, sleeping...")
            self.log.flush()
            time.sleep(10)
            return
        self.todo_names = [n for n in names if n.isdigit()]
        self.todo_names.reverse()
        self.next_todo = now + TODO_RESCAN

    def todo_step(self, now: float) -> None:
        if self.todo_names is None or self.exiting:
            return
        if not self.todo_names:
            self.todo_names = None
            return
        self.preprocess(int(self.todo_names.pop()), now)

    def preprocess(self, ident: int, now: float) -> None:
        """send.md §4.1 for todo/ID."""
        todo = self.path(b"todo", ident)
        try:
            fd = os.open(todo, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.log.line(b"warning: unable to open " + todo)
            return
        try:
            data = fdio.read_all(fd)
        except OSError:
            self.log.line(b"warning: trouble reading " + todo)
            return
        finally:
            os.close(fd)
        mess = self.path(b"mess", ident)
        try:
            size = os.stat(mess).st_size
        except OSError:
            self.log.line(b"warning: unable to stat " + mess)
            return
        names = [self.path(b"local", ident), self.path(b"remote", ident), self.path(b"info", ident)]
        for name in names:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
            except OSError:
                self.log.line(b"warning: unable to unlink " + name)
                return
        info_name = names[2]
        files: dict[bytes, int] = {}
        chunks: dict[bytes, list[bytes]] = {names[0]: [], names[1]: []}
        try:
            try:
                files[info_name] = os.open(info_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError:
                self.log.line(b"warning: unable to create " + info_name)
                return
            self.log.line(b"new msg %d" % ident)
            uid = qp = 0
            for record in data.split(b"\0")[:-1]:
                kind = record[:1]
                if kind == b"u":
                    uid = control.scan_ulong(record[1:]) or 0  # qmail's scan_ulong()
                elif kind == b"p":
                    qp = control.scan_ulong(record[1:]) or 0
                elif kind == b"F":
                    try:
                        os.write(files[info_name], record + b"\0")
                    except OSError:
                        self.log.line(b"warning: trouble writing to " + info_name)
                        return
                    self.log.line(b"info msg %d: bytes %d from <%s> qp %d uid %d"
                                  % (ident, size, safe(record[1:]), qp, uid))
                elif kind == b"T":
                    channel, addr = self.cfg.rewrite(record[1:])
                    chunks[names[channel]].append(b"T" + addr + b"\0")
                else:
                    self.log.line(b"warning: unknown record type in " + todo)
                    return
            for name in (names[0], names[1]):
                if chunks[name]:
                    try:
                        files[name] = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    except OSError:
                        self.log.line(b"warning: unable to create " + name)
                        return
                    try:
                        os.write(files[name], b"".join(chunks[name]))
                    except OSError:
                        self.log.line(b"warning: trouble writing to " + name)
                        return
            for name in (info_name, names[0], names[1]):
                if name in files:
                    try:
                        os.fsync(files[name])
                    except OSError:
                        self.log.line(b"warning: trouble fsyncing " + name)
                        return
        finally:
            for fd in files.values():
                os.close(fd)
        if not self.clean(b"todo/%d" % ident):
            return
        got = False
        for channel in (LOCAL, REMOTE):
            if chunks[names[channel]]:
                self.enqueue(channel, ident, now)
                got = True
        if not got:
            heapq.heappush(self.done, (now, ident))

    # scheduling
    def enqueue(self, channel: int, ident: int, due: float) -> None:
        if ident in self.queued[channel]:
            return
        self.queued[channel].add(ident)
        heapq.heappush(self.queues[channel], (due, ident))

    def job_slots_free(self) -> bool:
        return self.job_count < self.cfg.concurrency[0] + self.cfg.concurrency[1]

    def free_slot(self, channel: int) -> int | None:
        spawner = self.spawners[channel]
        if not spawner.alive or spawner.pending:
            return None
        for i in range(self.cfg.concurrency[channel]):
            if spawner.slots[i] is None:
                return i
        return None

    def open_pass(self, channel: int, now: float) -> None:
        """send.md §5.3: take the due head of the channel's queue."""
        queue = self.queues[channel]
        if self.jobs[channel] is not None or self.exiting or not queue or queue[0][0] > now:
            return
        if not self.job_slots_free() or not self.spawners[channel].alive:
            return
        due, ident = heapq.heappop(queue)
        self.queued[channel].discard(ident)
        path = self.path(CHANNEL_NAME[channel], ident)
        trouble = path
        try:
            data = read_file(path)
            # qmail's getinfo(): the message names info/S/ID when it fails
            trouble = self.path(b"info", ident)
            sender, birth = read_file(trouble, with_mtime=True)
            if not sender.startswith(b"F") or b"\0" not in sender:
                raise OSError(errno.EINVAL, "no sender")
        except OSError:
            self.log.line(b"warning: trouble opening %s; will try again later" % trouble)
            self.enqueue(channel, ident, now + SYSTEM_RETRY)
            return
        sender = sender[1:].split(b"\0", 1)[0]
        records = []
        offset = 0
        while True:
            end = data.find(b"\0", offset)
            if end < 0:
                break
            records.append((offset, data[offset:end]))
            offset = end + 1
        too_old = now > birth + self.cfg.lifetime
        job = Job(ident, channel, path, records, sender, next_retry(birth, now, channel), too_old)
        self.jobs[channel] = job
        self.job_count += 1

    def pass_step(self, channel: int) -> None:
        """Start deliveries from the open pass while slots are free."""
        job = self.jobs[channel]
        if job is None or not job.open:
            return
        while job.open:
            if job.position >= len(job.records):
                job.open = False
                job.complete = True
                break
            offset, record = job.records[job.position]
            kind = record[:1]
            if kind == b"D":
                job.position += 1
                continue
            if kind != b"T":
                self.log.line(b"warning: unknown record type in %s!" % job.path)
                job.open = False
                break
            if self.exiting:
                # send.md §5.7: a pass still open at exit is never rescheduled,
                # so its channel file keeps its mtime: retried at once next run
                job.open = False
                job.abandoned = True
                break
            slot = self.free_slot(channel)
            if slot is None:
                break
            job.position += 1
            self.start_delivery(job, slot, offset, record[1:])
        if not job.open:
            self.jobs[channel] = None  # the pass is over; the job lives on
            self.maybe_close_job(channel, job)

    def start_delivery(self, job: Job, slot: int, offset: int, recipient: bytes) -> None:
        spawner = self.spawners[job.channel]
        self.delivery_number += 1
        number = self.delivery_number
        spawner.slots[slot] = Delivery(job, number, offset, recipient)
        job.outstanding += 1
        command = (bytes((slot,)) + b"%d/%d\0" % (self.part(job.ident), job.ident)
                   + verp(job.sender, recipient) + b"\0" + recipient + b"\0")
        spawner.pending = command
        self.log.line(b"starting delivery %d: msg %d to %s %s"
                      % (number, job.ident, CHANNEL_NAME[job.channel], safe(recipient)))
        self.status()
        # qmail writes the command after logging it (comm_do, next iteration),
        # so a lost spawner's alert follows the `starting delivery` line
        self.flush_spawner(spawner)

    def flush_spawner(self, spawner: Spawner) -> None:
        if not spawner.pending or not spawner.alive:
            return
        try:
            written = os.write(spawner.out_fd, spawner.pending)
            spawner.pending = spawner.pending[written:]
        except BrokenPipeError:
            self.lose_spawner(spawner)
        except OSError:
            pass  # qmail's comm_do(): only EPIPE means the spawner is gone

    def lose_spawner(self, spawner: Spawner) -> None:
        """send.md §3.3: the channel is dead and its outstanding deliveries are
        no longer awaited; their jobs never close, so their messages are not
        rescheduled and keep their channel files' mtimes (retried at once at
        the next start), as in qmail."""
        if spawner.alive:
            spawner.alive = False
            self.log.line(b"alert: oh no! lost spawn connection! dying...")
            self.exiting = True

    def read_results(self, spawner: Spawner) -> None:
        try:
            data = os.read(spawner.in_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.lose_spawner(spawner)
            return
        spawner.inbuf += data
        while True:
            # a report is SLOT CODE TEXT NUL, ending at a NUL that is not its first
            # byte; as qmail's dline, only its first REPORT_MAX bytes are kept
            end = spawner.inbuf.find(b"\0", 1)
            if end < 0:
                if len(spawner.inbuf) > REPORT_MAX:
                    del spawner.inbuf[REPORT_MAX:]
                return
            report = bytes(spawner.inbuf[:min(end, REPORT_MAX)])
            del spawner.inbuf[:end + 1]
            self.result(spawner, report[0], report[1:], end >= REPORT_MAX)

    def result(self, spawner: Spawner, slot: int, report: bytes, cut: bool = False) -> None:
        """send.md §5.5.  cut: the report filled qmail's REPORT_MAX buffer."""
        if slot >= len(spawner.slots) or spawner.slots[slot] is None:
            self.log.line(b"warning: internal error: delivery report out of range")
            return
        d = spawner.slots[slot]
        spawner.slots[slot] = None
        job = d.job
        code, text = report[:1], report[1:]
        if job.too_old and code == b"Z":
            # qmail drops the NUL that ended its buffer (--dline.len): for a cut
            # report that is the buffer's last text byte
            code, text = b"D", (text[:-1] if cut else text) + TOO_OLD
        if code == b"K":
            self.log.line(b"delivery %d: success: %s" % (d.number, safe(text)))
            self.mark_done(job, d.offset)
        elif code == b"Z":
            self.log.line(b"delivery %d: deferral: %s" % (d.number, safe(text)))
            job.all_done = False
        elif code == b"D":
            self.log.line(b"delivery %d: failure: %s" % (d.number, safe(text)))
            self.append_bounce(job.ident, d.recipient, text)
            self.mark_done(job, d.offset)
        else:
            self.log.line(b"delivery %d: report mangled, will defer" % d.number)
            job.all_done = False
        job.outstanding -= 1
        self.status()
        self.maybe_close_job(job.channel, job)

    def mark_done(self, job: Job, offset: int) -> None:
        try:
            fd = os.open(job.path, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.pwrite(fd, b"D", offset)
            finally:
                os.close(fd)
        except OSError:
            self.log.line(b"warning: trouble marking %s; message will be delivered twice!" % job.path)

    def append_bounce(self, ident: int, recipient: bytes, text: bytes) -> None:
        block = bounce_block(self.cfg.unvirtual(recipient), text)
        while True:
            try:
                fd = os.open(self.path(b"bounce", ident), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, block)
                finally:
                    os.close(fd)
                return
            except OSError:
                self.log.line(b"alert: unable to append to bounce message; HELP! sleeping...")
                self.log.flush()
                time.sleep(10)

    def maybe_close_job(self, channel: int, job: Job) -> None:
        """send.md §5.6."""
        if job.open or job.outstanding > 0:
            return
        self.job_count -= 1
        if job.abandoned:
            return
        now = time.time()
        if job.complete and job.all_done:
            try:
                os.unlink(job.path)
            except FileNotFoundError:
                pass
            except OSError:
                self.log.line(b"warning: unable to unlink %s; will try again later" % job.path)
                self.enqueue(channel, job.ident, now + SYSTEM_RETRY)
                return
            other = self.path(CHANNEL_NAME[1 - channel], job.ident)
            try:
                os.stat(other)
            except FileNotFoundError:
                heapq.heappush(self.done, (now, job.ident))
            except OSError:
                self.log.line(b"warning: unable to stat " + other)
                heapq.heappush(self.done, (now, job.ident))
        else:
            self.enqueue(channel, job.ident, job.retry)

    # completion and bounces
    def done_step(self, now: float) -> None:
        if not self.done or self.done[0][0] > now:
            return
        due, ident = heapq.heappop(self.done)
        info = self.path(b"info", ident)
        for kind in (b"local", b"remote", b"todo", b"info"):
            path = self.path(kind, ident)
            found = stat_state(path)
            if found is None:
                self.log.line(b"warning: unable to stat %s; will try again later" % path)
                heapq.heappush(self.done, (now + SYSTEM_RETRY, ident))
                return
            if found != (kind == b"info"):
                return  # a channel file or todo/ID exists, or info is gone
        if not self.send_bounce(ident):
            heapq.heappush(self.done, (now + SYSTEM_RETRY, ident))
            return
        self.log.line(b"end msg %d" % ident)
        try:
            os.unlink(info)
        except OSError:
            self.log.line(b"warning: unable to unlink %s; will try again later" % info)
            heapq.heappush(self.done, (now + SYSTEM_RETRY, ident))
            return
        self.clean(b"foop/%d" % ident)

    def send_bounce(self, ident: int) -> bool:
        """send.md §8: queue one bounce for bounce/ID, if there is one."""
        bounce = self.path(b"bounce", ident)
        try:
            info = read_file(self.path(b"info", ident))
        except OSError:
            return False
        if not info.startswith(b"F") or b"\0" not in info:
            return False  # qmail's getinfo() fails: retried silently
        sender = info[1:].split(b"\0", 1)[0]
        found = stat_state(bounce)
        if found is False:
            return True
        if found is None:
            self.log.line(b"warning: unable to stat " + bounce)
            return False
        if sender.endswith(b"-@[]"):
            sender = sender[:-4]  # owner-@host-@[] -> owner-@host, before the #@[] test
        if sender == b"#@[]":
            self.log.line(b"triple bounce: discarding " + bounce)
        else:
            qp = self.inject_bounce(ident, sender)
            if qp is None:
                return False
            self.log.line(b"bounce msg %d qp %d" % (ident, qp))
        try:
            os.unlink(bounce)
        except OSError:
            self.log.line(b"warning: unable to unlink " + bounce)
            return False
        return True

    def inject_bounce(self, ident: int, sender: bytes) -> int | None:
        from pyqmail import qmail
        cfg = self.cfg
        double = not sender
        if double:
            recipient = cfg.doublebounceto + b"@" + cfg.doublebouncehost
        else:
            recipient = sender
        head = [b"Date: %s\n" % date822.date822fmt(time.time()),
                b"From: %s@%s\n" % (quote.quote(cfg.bouncefrom), cfg.bouncehost),
                b"To: %s\n" % quote.quote2(recipient),
                b"Subject: failure notice\n\n",
                b"Hi. This is the qmail-send program at %s.\n" % cfg.bouncehost]
        if double:
            head.append(b"I tried to deliver a bounce message to this address, but the bounce bounced!\n\n")
        else:
            head.append(b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
                        b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n")
        tail = (b"--- Below this line is the original bounce.\n\n" if double
                else b"--- Below this line is a copy of the message.\n\n")
        tail += b"Return-Path: <%s>\n" % quote.quote2(sender)
        qq = qmail.Qmail(self.qmail_home, self.env)
        try:
            qq.open()
        except errors.Failure:
            self.log.line(b"warning: unable to start qmail-queue, will try later")
            return None
        qq.put(b"".join(head))
        # bounce/ID, then the message; an unreadable one fails the injection
        for name, before in ((self.path(b"bounce", ident), b""), (self.path(b"mess", ident), tail)):
            qq.put(before)
            try:
                with open(name, "rb") as f:
                    while chunk := f.read(65536):
                        qq.put(chunk)
            except OSError:
                qq.fail()
        qq.from_(b"#@[]" if double else b"")
        qq.to(recipient)
        if qq.close():
            self.log.line(b"warning: trouble injecting bounce message, will try later")
            return None
        return qq.qp

    # start-up and shut-down
    def rebuild(self, now: float) -> None:
        """send.md §5.7: schedule every preprocessed message from info/."""
        for part in range(self.split):
            while True:
                try:
                    names = os.listdir(b"info/%d" % part)
                    break
                except OSError:
                    self.log.line(b"alert: unable to opendir info/%d, sleeping..." % part)
                    self.log.flush()
                    time.sleep(10)
            for name in names:
                if name.isdigit():
                    self.schedule_existing(int(name), now)

    def schedule_existing(self, ident: int, now: float) -> None:
        """qmail's pqadd(): info gone or todo present → nothing; each channel
        file due at its mtime; neither → done; a stat error → retry-stat."""
        due = []
        for kind in (b"info", b"todo", b"local", b"remote"):
            path = self.path(kind, ident)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if kind == b"info":
                    return
                continue
            except OSError:
                self.log.line(b"warning: unable to stat %s; will try again later" % path)
                heapq.heappush(self.retry_stat, (now + SYSTEM_RETRY, ident))
                return
            if kind == b"todo":
                return
            if kind != b"info":
                due.append((LOCAL if kind == b"local" else REMOTE, st.st_mtime))
        for channel, when in due:
            self.enqueue(channel, ident, when)
        if not due:
            heapq.heappush(self.done, (now, ident))

    def retry_stat_step(self, now: float) -> None:
        if self.retry_stat and self.retry_stat[0][0] <= now:
            due, ident = heapq.heappop(self.retry_stat)
            self.schedule_existing(ident, now)

    def save_schedule(self) -> None:
        for channel in (LOCAL, REMOTE):
            for due, ident in self.queues[channel]:
                path = self.path(CHANNEL_NAME[channel], ident)
                try:
                    os.utime(path, (due, due))
                except OSError:
                    self.log.line(b"warning: unable to utime %s; message will be retried too soon" % path)

    def cleanup_step(self, now: float) -> None:
        """send.md §5.8: one mess/ entry per iteration; orphans go to qmail-clean."""
        if self.cleanup_names is None:
            if now < self.next_cleanup or self.exiting:
                return
            names = []
            for part in range(self.split):
                try:
                    names += [(part, n) for n in os.listdir(b"mess/%d" % part) if n.isdigit()]
                except OSError:
                    self.log.line(b"alert: unable to opendir mess/%d, sleeping..." % part)
            names.reverse()
            self.cleanup_names = names
        if not self.cleanup_names:
            self.cleanup_names = None
            self.next_cleanup = now + CLEANUP_INTERVAL
            return
        part, name = self.cleanup_names.pop()
        ident = int(name)
        try:
            st = os.stat(b"mess/%d/%s" % (part, name))
        except OSError:
            return
        if now <= st.st_atime + OSSIFIED:
            return
        for kind in (b"info", b"todo"):
            try:
                os.stat(self.path(kind, ident))
                return
            except FileNotFoundError:
                pass
            except OSError:
                return
        self.clean(b"foop/%d" % ident)

    def reread(self) -> None:
        """SIGHUP: locals and virtualdomains (send.md §6)."""
        try:
            os.chdir(self.qmail_home)
        except OSError:
            self.log.line(b"alert: unable to reread controls: unable to switch to home directory")
            return
        # qmail's regetcontrols(): both files are read before either is used;
        # any failure keeps both old values; `me` is the one read at start
        ctl = control.Control(b".")
        try:
            entries = ctl.list(b"locals")
            if entries is None:
                if self.cfg.me is None:
                    raise control.ControlError(b"control/locals", b"missing")
                entries = [self.cfg.me]
        except control.ControlError:
            entries = None
            self.log.line(b"alert: unable to reread control/locals")
        if entries is not None:
            try:
                vdoms = ctl.list(b"virtualdomains") or []
            except control.ControlError:
                self.log.line(b"alert: unable to reread control/virtualdomains")
            else:
                self.cfg.set_locals(entries)
                self.cfg.set_virtualdomains(vdoms)
        while True:
            try:
                os.chdir(b"queue")
                return
            except OSError:
                self.log.line(b"alert: unable to switch back to queue directory; HELP! sleeping...")
                self.log.flush()
                time.sleep(10)

    def outstanding(self) -> bool:
        return any(d is not None for s in self.spawners if s.alive for d in s.slots)

    def wakeup(self, now: float) -> float:
        times = [now + SLEEP_FOREVER]
        if not self.exiting:
            if self.todo_names is not None:
                return now
            times.append(self.next_todo)
            for channel in (LOCAL, REMOTE):
                job = self.jobs[channel]
                if job is not None and job.open and self.free_slot(channel) is not None:
                    return now
                if job is None and self.queues[channel] and self.job_slots_free():
                    times.append(self.queues[channel][0][0])
            if self.cleanup_names is not None:
                return now
            times.append(self.next_cleanup)
        if self.done:
            times.append(self.done[0][0])
        if self.retry_stat:
            times.append(self.retry_stat[0][0])
        return min(times)

    def loop(self) -> None:
        self.log.held = True
        try:
            self.passes()
        finally:
            self.log.held = False
            self.log.flush()

    def passes(self) -> None:
        poller_fds = {}
        while not (self.exiting and not self.outstanding()):
            now = time.time()
            if self.flag_alarm:
                self.flag_alarm = False
                for channel in (LOCAL, REMOTE):
                    self.queues[channel] = [(now, ident) for due, ident in self.queues[channel]]
                    heapq.heapify(self.queues[channel])
            if self.flag_hup:
                self.flag_hup = False
                self.reread()
            wake = self.wakeup(now)
            timeout = 0 if wake <= now else wake - now + 1
            poller = select.poll()
            poller_fds.clear()
            for s in self.spawners:
                if s.alive:
                    poller.register(s.in_fd, select.POLLIN)
                    poller_fds[s.in_fd] = s
                    if s.pending:
                        poller.register(s.out_fd, select.POLLOUT)
            if self.trigger_fd >= 0 and not self.exiting:
                poller.register(self.trigger_fd, select.POLLIN)
            if self.wakeup_fd >= 0:
                poller.register(self.wakeup_fd, select.POLLIN)
            self.log.flush()
            try:
                events = poller.poll(int(timeout * 1000))
            except InterruptedError:
                events = []
            now = time.time()
            readable = {fd for fd, ev in events if ev & (select.POLLIN | select.POLLHUP | select.POLLERR)}
            if self.wakeup_fd in readable:
                try:
                    os.read(self.wakeup_fd, 4096)
                except OSError:
                    pass
            for s in self.spawners:
                if s.pending:
                    self.flush_spawner(s)
            for s in self.spawners:
                if s.alive and s.in_fd in readable:
                    self.read_results(s)
            if not self.exiting and ((self.trigger_fd in readable and self.todo_names is None)
                                     or (now >= self.next_todo and self.todo_names is None)):
                self.start_todo_scan(now)
            self.todo_step(now)
            for channel in (LOCAL, REMOTE):
                self.open_pass(channel, now)
                self.pass_step(channel)
            self.retry_stat_step(now)
            self.done_step(now)
            self.cleanup_step(now)
        self.save_schedule()
        self.log.line(b"status: exiting")


def run(qmail_home: bytes, split: int = auto.SPLIT, env=None) -> int:
    log = Log(0)
    try:
        os.chdir(qmail_home)
    except OSError:
        log.line(b"alert: cannot start: unable to switch to home directory")
        return 111
    try:
        cfg = Config(control.Control(b"."))
    except control.ControlError:
        log.line(b"alert: cannot start: unable to read controls")
        return 111
    try:
        os.chdir(b"queue")
    except OSError:
        log.line(b"alert: cannot start: unable to switch to queue directory")
        return 111
    spawners = [Spawner(LOCAL, 1, 2), Spawner(REMOTE, 3, 4)]
    send = Send(cfg, qmail_home, log, split, spawners, 5, 6, env)

    def on_term(*_):
        send.exiting = True

    def on_alarm(*_):
        send.flag_alarm = True

    def on_hup(*_):
        send.flag_hup = True

    # send.md §1 step 4: the flags are caught from here on, before the mutex
    # and the spawners' greetings, so an early TERM/ALRM/HUP never kills us
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    send.wakeup_fd = wake_r
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.umask(0o077)
    try:
        mutex = os.open(b"lock/sendmutex", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        log.line(b"alert: cannot start: unable to open mutex")
        return 111
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log.line(b"alert: cannot start: qmail-send is already running")
        return 111
    for s in spawners:
        try:
            byte = os.read(s.in_fd, 1)
        except OSError:
            byte = b""
        if not byte:
            log.line(b"alert: cannot start: hath the daemon spawn no fire?")
            return 111
        cfg.concurrency[s.channel] = min(cfg.concurrency[s.channel], byte[0])
        s.slots = [None] * cfg.concurrency[s.channel]
    for s in spawners:
        try:
            os.set_blocking(s.out_fd, False)
        except OSError:
            send.lose_spawner(s)
    now = time.time()
    send.rebuild(now)
    send.status()
    send.open_trigger()
    send.next_todo = now
    send.next_cleanup = now
    send.loop()
    return 0


def main() -> None:
    try:
        code = run(auto.QMAIL_HOME, auto.SPLIT, environ.original())
    except Exception:
        Log(0).line(b"alert: internal error in qmail-send; exiting")
        code = 111
    sys.exit(code)
