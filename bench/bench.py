"""make bench: pyqmail beside Debian's Postfix and beside the raw cost of the file
work, in the same run, on the same disk, interleaved; prints ratios, never a
claim about absolute speed.

Run as root by /usr/bin/python3 (the interpreter pyqmail runs on):
    bench/bench.py [--quick] [--messages N] [--rounds R] [--only a,b] [--out DIR]
"""
import argparse
import datetime
import json
import os
import platform
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, SRC)
sys.path.insert(0, HERE)

from pyqmail import auto, qmail  # noqa: E402
import floor  # noqa: E402
from postfix_mta import Postfix  # noqa: E402
from pyqmail_mta import Pyqmail, children  # noqa: E402

PYTHON = "/usr/bin/python3"
QDOMAIN = "qmail.bench"
PDOMAIN = "postfix.bench"
RELAY = "remote.bench"
DEAD = "dead.bench"
SENDER = "bench@sender.example"
SCENARIOS = ("queue", "smtp", "inject", "local", "relay", "startup", "memory", "silly")
IDLE_BUSY = 0.10       # a run starts once all other work uses < 10% of the machine
BIG = 10 * 1024 * 1024


class BenchError(Exception):
    """A run did not do its work (missing messages, a failing client)."""


class Terminated(BaseException):
    """SIGTERM/SIGHUP: unwind through the cleanup, as Ctrl-C does."""


def message_bytes(size: int) -> bytes:
    """A message of exactly size bytes with every header an MTA would otherwise
    add (Date, Message-Id), so the delivered copy ends with these very bytes."""
    head = (b"Date: Wed, 01 Jan 2025 00:00:00 +0000\n"
            b"Message-Id: <bench.1@sender.example>\n"
            b"From: " + SENDER.encode() + b"\n"
            b"To: bench@example.invalid\n"
            b"Subject: pyqmail benchmark\n\n")
    body = bytearray()
    n = 0
    while len(head) + len(body) < size:
        body += b"line %05d of the benchmark message body, padding text ........\n" % n
        n += 1
    body = body[:size - len(head) - 1] + b"\n"
    return head + bytes(body)


# ---- the machine

def cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return fields[3] + fields[4], sum(fields)


def busy_fraction(interval: float) -> float:
    """Share of all cores busy over interval (from /proc/stat)."""
    idle0, total0 = cpu_times()
    time.sleep(interval)
    idle1, total1 = cpu_times()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def filesystem_type(path: str) -> str:
    best, kind = "", "?"
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, "%s (%s on %s)" % (fstype, dev, mnt)
    return kind


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port(avoid: set[int]) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in avoid:
            avoid.add(port)
            return port
    raise BenchError("no free loopback port")


def process_cpu(roots: list[int]) -> dict[tuple[int, str], tuple[int, int, int, int]]:
    """(pid, comm) -> (its CPU ticks, its reaped children's CPU ticks, its minor
    faults, its reaped children's minor faults) for every process under roots."""
    out = {}
    for comm, pids in {c: p for root in roots for c, p in children(root).items()}.items():
        for pid in pids:
            try:
                with open("/proc/%d/stat" % pid, "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            # stat fields 10-17: minflt cminflt majflt cmajflt utime stime cutime cstime
            out[(pid, comm)] = (int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]),
                                int(fields[7]), int(fields[8]))
    return out


def cpu_per_message(before: dict, after: dict, n: int) -> dict:
    """CPU milliseconds and minor faults per message, by program between two
    process_cpu() snapshots: each process's own, and as `NAME/children` what the
    processes it forked and reaped used (a listener's connections, a spawner's
    deliveries).  A process that ended during the run counts in full."""
    tick = os.sysconf("SC_CLK_TCK")
    by_name: dict[str, list[int]] = {}
    for key, (own, reaped, own_faults, reaped_faults) in after.items():
        was = before.get(key, (0, 0, 0, 0))
        for name, ticks, faults in ((key[1], own - was[0], own_faults - was[2]),
                                    (key[1] + "/children", reaped - was[1], reaped_faults - was[3])):
            if ticks or faults:
                total = by_name.setdefault(name, [0, 0])
                total[0] += ticks
                total[1] += faults
    return {name: {"cpu_ms": round(ticks * 1000 / tick / n, 3), "faults": round(faults / n, 1)}
            for name, (ticks, faults) in sorted(by_name.items())}


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values),
            "runs": values}


# ---- mailboxes and sinks

class Mailbox:
    """An account's ~/Maildir/new: count, verify, empty."""

    def __init__(self, name: str, home: str, domain: str):
        self.name = name
        self.home = home
        self.address = "%s@%s" % (name, domain)
        self.new = os.path.join(home, "Maildir", "new")

    def count(self) -> int:
        return len(os.listdir(self.new))

    def files(self) -> list[str]:
        return sorted(os.path.join(self.new, n) for n in os.listdir(self.new))

    def verify(self, n: int, message: bytes) -> None:
        files = self.files()
        if len(files) != n:
            raise BenchError("%s: %d messages in Maildir/new, expected %d" % (self.address, len(files), n))
        marker = b"Delivered-To: %s\n" % self.address.encode()
        for path in {files[0], files[len(files) // 2], files[-1]}:
            with open(path, "rb") as f:
                data = f.read()
            if not data.endswith(message) or marker not in data[:len(data) - len(message)]:
                raise BenchError("%s: %s is not the message sent" % (self.address, path))

    def empty(self) -> None:
        for sub in ("new", "cur", "tmp"):
            d = os.path.join(self.home, "Maildir", sub)
            for name in os.listdir(d):
                os.unlink(os.path.join(d, name))


class Sink:
    """Postfix's smtp-sink on loopback, one file per message in a directory."""

    def __init__(self, base: str, port: int):
        self.dir = os.path.join(base, "sink")
        os.mkdir(self.dir)
        os.chmod(self.dir, 0o777)
        self.port = port
        self.proc = subprocess.Popen(["smtp-sink", "-u", "nobody", "-d", os.path.join(self.dir, "m."),
                                      "127.0.0.1:%d" % port, "256"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise BenchError("smtp-sink did not start") from None
                time.sleep(0.02)

    def count(self) -> int:
        return len(os.listdir(self.dir))

    def verify(self, n: int, message: bytes, rcpt: str) -> None:
        files = sorted(os.listdir(self.dir))
        if len(files) != n:
            raise BenchError("sink: %d messages, expected %d" % (len(files), n))
        for name in {files[0], files[len(files) // 2], files[-1]}:
            # smtp-sink creates a dump when the session starts and ends it with
            # one more empty line: a file may still be growing when counted
            deadline = time.monotonic() + 10
            while True:
                with open(os.path.join(self.dir, name), "rb") as f:
                    data = f.read()
                if data.endswith(message + b"\n") and b"X-Rcpt-Args: <%s>" % rcpt.encode() in data:
                    break
                if time.monotonic() > deadline:
                    raise BenchError("sink: %s is not the message sent" % name)
                time.sleep(0.05)

    def empty(self) -> None:
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_count(count, n: int, t0: float, timeout: float, client=None, interval: float = 0.05):
    """Poll count() until it reaches n; (seconds since t0, timeline of (s, count))."""
    timeline = [(0.0, 0)]
    last = 0
    while True:
        c = count()
        now = time.monotonic()
        if c != last:
            timeline.append((round(now - t0, 3), c))
            last = c
        if c >= n:
            return now - t0, timeline
        if now - t0 > timeout:
            raise BenchError("only %d of %d messages after %.0f s" % (c, n, timeout))
        if client is not None and client.poll() not in (None, 0):
            raise BenchError("client %s exited %d" % (client.args[0], client.returncode))
        time.sleep(interval)


# ---- the benchmark

class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.rounds = args.rounds or (1 if self.quick else 3)
        self.n = args.messages or (200 if self.quick else 2000)
        self.big = args.big if args.big is not None else (0 if self.quick else 20000)
        self.deferred = args.deferred or (5000 if self.quick else 50000)
        self.settle = args.settle if args.settle is not None else (3 if self.quick else 60)
        self.idle_timeout = 15 if self.quick else 120
        self.cores = os.cpu_count() or 1
        self.elapsed = 0.0
        self.message = message_bytes(1024)
        # smtp-source -F sends the file and then one more CRLF: the mail it sends
        self.smtp_message = self.message + b"\n"
        self.results: list[dict] = []
        self.loads: list[float] = []
        self.procs: list[subprocess.Popen] = []
        self.users: list[str] = []
        self.base = tempfile.mkdtemp(prefix="pyqmail-bench-", dir=args.tmp)
        os.chmod(self.base, 0o755)
        self.pyqmail = None
        self.postfix = None
        self.sink = None

    # -- set-up and tear-down

    def make_user(self, tag: str, domain: str) -> Mailbox:
        name = "pqb%s%d" % (tag, os.getpid() % 100000)
        home = os.path.join(self.base, "home", name)
        os.makedirs(home)
        subprocess.run(["useradd", "--no-create-home", "--home-dir", home, "--user-group",
                        "--shell", "/bin/sh", name], check=True, capture_output=True)
        self.users.append(name)
        pw = pwd.getpwnam(name)
        for d in (home, os.path.join(home, "Maildir"), *(os.path.join(home, "Maildir", s)
                                                          for s in ("tmp", "new", "cur"))):
            os.makedirs(d, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o700)
        os.chmod(home, 0o755)
        return Mailbox(name, home, domain)

    def setup(self) -> None:
        ports: set[int] = set()
        self.qport, self.pport, self.sink_port, self.dead_port, self.fport = (free_port(ports) for _ in range(5))
        msgfile = os.path.join(self.base, "message")
        with open(msgfile, "wb") as f:
            f.write(self.message)
        os.chmod(msgfile, 0o644)
        self.msgfile = msgfile
        self.qbox = self.make_user("q", QDOMAIN)
        self.pbox = self.make_user("p", PDOMAIN)
        qbase = os.path.join(self.base, "pyqmail")
        pbase = os.path.join(self.base, "postfix")
        for d in (qbase, pbase):
            os.mkdir(d)
            os.chmod(d, 0o755)
        self.pyqmail = Pyqmail(SRC, qbase, QDOMAIN, self.qport, RELAY, self.sink_port, DEAD, self.dead_port)
        self.postfix = Postfix(pbase, PDOMAIN, self.pport, RELAY, self.sink_port, DEAD, self.dead_port)
        self.postfix.start()
        self.wait_port(self.pport)
        self.sink = Sink(self.base, self.sink_port)

    def wait_port(self, port: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError("nothing listens on port %d" % port) from None
                time.sleep(0.05)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for stop in (self.sink and self.sink.stop, self.pyqmail and self.pyqmail.stop,
                     self.postfix and self.postfix.stop):
            if stop:
                try:
                    stop()
                except Exception as e:  # keep stopping the others
                    print("bench: cleanup: %s" % e, file=sys.stderr)
        for name in self.users:
            subprocess.run(["userdel", name], capture_output=True)
            subprocess.run(["groupdel", name], capture_output=True)
        if self.args.keep:
            print("bench: kept %s" % self.base, file=sys.stderr)
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- the measuring discipline

    def before_run(self) -> float:
        """sync, then wait (bounded) until the machine is quiet; the load seen."""
        os.sync()
        deadline = time.monotonic() + self.idle_timeout
        while True:
            busy = busy_fraction(0.5)
            if busy < IDLE_BUSY or time.monotonic() > deadline:
                self.loads.append(busy)
                return busy
            time.sleep(0.5)

    def interleave(self, subjects: list, rounds: int | None = None) -> dict[str, list]:
        """Each subject's run, alternately (ABAB, then BABA), for every round."""
        out: dict[str, list] = {name: [] for name, _ in subjects}
        for r in range(rounds or self.rounds):
            order = subjects if r % 2 == 0 else list(reversed(subjects))
            for name, run in order:
                load = self.before_run()
                figure, extra = run()
                out[name].append(dict(extra, value=figure, load=round(load, 3), round=r + 1))
                self.say("  %-22s round %d: %10.3f  (load before %.0f%%)" % (name, r + 1, figure, 100 * load))
        return out

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def record(self, scenario: str, title: str, unit: str, runs: dict[str, list], ratios: list,
               **extra) -> None:
        figures = {name: dict(summary([r["value"] for r in rs]), detail=rs) for name, rs in runs.items()}
        ratio = {}
        for top, bottom in ratios:
            ratio["%s/%s" % (top, bottom)] = figures[top]["median"] / figures[bottom]["median"]
        self.results.append(dict(scenario=scenario, title=title, unit=unit, figures=figures,
                                 ratio=ratio, cores=self.cores,
                                 date=datetime.datetime.now().isoformat(timespec="seconds"),
                                 rounds=max(len(rs) for rs in runs.values()), **extra))

    # -- scenario 4: the queue against its floor

    def scenario_queue(self) -> None:
        n = self.n
        q = self.pyqmail
        q.stop_smtpd()
        q.stop_tree()
        q.start_queued()
        queue = os.path.join(q.home, "queue")
        envelope = b"F%s\0T%s\0\0" % (SENDER.encode(), self.qbox.address.encode())
        floor_queue = floor.make_queue(os.path.join(self.base, "floor"), auto.SPLIT)
        received = b"Received: (qmail 12345 invoked by uid 0); 1 Jan 2025 00:00:00 -0000\n"
        nobody = pwd.getpwnam("nobody")

        def verify_queue() -> None:
            todo = os.listdir(os.path.join(queue, "todo"))
            if len(todo) != n:
                raise BenchError("queue: %d messages in todo/, expected %d" % (len(todo), n))
            for ident in (todo[0], todo[-1]):
                with open(os.path.join(queue, "mess", str(int(ident) % auto.SPLIT), ident), "rb") as f:
                    data = f.read()
                with open(os.path.join(queue, "intd", ident), "rb") as f:
                    env = f.read()
                if not (data.startswith(b"Received: (qmail ") and data.endswith(self.message)
                        and data.count(b"\n") == self.message.count(b"\n") + 1
                        and env.endswith(envelope[:-1]) and env.startswith(b"u")):
                    raise BenchError("queue: message %s is not what was queued" % ident)

        def empty_queue() -> None:
            for sub in ("todo", "intd"):
                for name in os.listdir(os.path.join(queue, sub)):
                    os.unlink(os.path.join(queue, sub, name))
            for part in os.listdir(os.path.join(queue, "mess")):
                d = os.path.join(queue, "mess", part)
                for name in os.listdir(d):
                    os.unlink(os.path.join(d, name))

        def service():
            t0 = time.monotonic()
            self.queue_through_service(n, self.qbox.address)
            seconds = time.monotonic() - t0
            verify_queue()
            empty_queue()
            return n / seconds, {"seconds": seconds, "count": n}

        def exec_each():
            argv = [q.bin("qmail-queue")]
            t0 = time.monotonic()
            for _ in range(n):
                r, w = os.pipe()
                os.write(w, envelope)
                os.close(w)
                done = subprocess.run(argv, input=self.message, stdout=r, cwd="/",
                                      env={"PATH": "/usr/bin:/bin"},
                                      user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])
                os.close(r)
                if done.returncode != 0:
                    raise BenchError("bin/qmail-queue exited %d" % done.returncode)
            seconds = time.monotonic() - t0
            verify_queue()
            empty_queue()
            return n / seconds, {"seconds": seconds, "count": n}

        def floor_run(sync: bool):
            def run():
                fq = floor_queue.encode()
                t0 = time.monotonic()
                floor.run(fq, n, received, self.message, envelope[:-1], auto.SPLIT, sync)
                seconds = time.monotonic() - t0
                count = len(os.listdir(os.path.join(floor_queue, "todo")))
                if count != n:
                    raise BenchError("floor: %d in todo/, expected %d" % (count, n))
                floor.empty(floor_queue)
                return n / seconds, {"seconds": seconds, "count": n}
            return run

        self.say("queue floor: %d messages" % n)
        try:
            runs = self.interleave([("pyqmail service", service), ("floor fsync", floor_run(True)),
                                    ("pyqmail qmail-queue", exec_each), ("floor no fsync", floor_run(False))])
        finally:
            q.stop_queued()
            shutil.rmtree(floor_queue, ignore_errors=True)
        self.record("queue", "queue %d small messages, one client (higher is better)" % n, "msg/s", runs,
                    [("pyqmail service", "floor fsync"), ("pyqmail qmail-queue", "floor fsync"),
                     ("floor fsync", "floor no fsync")], messages=n, verified=True)

    # -- the MTAs running

    def start_mtas(self) -> None:
        q = self.pyqmail
        if q.tree is None:
            q.start_tree()
        if q.server is None:
            q.start_smtpd()
        if q.fast is None:
            q.start_fast(self.fport)

    def smtp_source(self, port: int, n: int, rcpt: str, sessions: int, per_connection: bool):
        argv = ["smtp-source", "-s", str(sessions), "-m", str(n), "-F", self.msgfile,
                "-f", SENDER, "-t", rcpt, "-M", "client.bench"]
        if per_connection:
            argv.append("-d")
        argv.append("127.0.0.1:%d" % port)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def finish_client(self, p) -> None:
        err = p.communicate(timeout=600)[1]
        self.procs.remove(p)
        if p.returncode != 0:
            raise BenchError("%s exited %d: %s" % (p.args[0], p.returncode, err.decode(errors="replace")[:300]))

    def drained(self, mta: str) -> None:
        """Wait until the MTA's queue is empty again (deliveries finish after the
        last file appears: queue clean-up is not part of the figure but must not
        spill into the next run)."""
        if mta.startswith("pyqmail"):
            cond = lambda: self.pyqmail.queue_files() == 0  # noqa: E731
        else:
            cond = self.postfix.queue_empty
        deadline = time.monotonic() + 120
        while not cond():
            if time.monotonic() > deadline:
                raise BenchError("%s queue not empty after 120 s" % mta)
            time.sleep(0.05)

    def smtp_run(self, mta: str, n: int, sessions: int, per_connection: bool, relay: bool = False):
        box = self.pbox if mta == "postfix" else self.qbox
        port = {"pyqmail": self.qport, "pyqmail-fast": self.fport, "postfix": self.pport}[mta]
        rcpt = "%s@%s" % (box.name, RELAY) if relay else box.address
        target = self.sink if relay else box

        def run():
            target.empty()
            roots = self.mta_roots(mta)
            before = process_cpu(roots)
            t0 = time.monotonic()
            client = self.smtp_source(port, n, rcpt, sessions, per_connection)
            seconds, timeline = wait_count(target.count, n, t0, max(300, n / 2), client)
            self.finish_client(client)
            if relay:
                target.verify(n, self.smtp_message, rcpt)
            else:
                target.verify(n, self.smtp_message)
            self.drained(mta)
            cpu = cpu_per_message(before, process_cpu(roots), n)
            target.empty()
            return n / seconds, {"seconds": round(seconds, 3), "count": n, "timeline": timeline,
                                 "cpu_ms_per_message": round(sum(c["cpu_ms"] for c in cpu.values()), 3),
                                 "cpu": cpu}
        return run

    def mta_roots(self, mta: str) -> list[int]:
        """The processes whose trees do an MTA's work in an SMTP run: the
        listener, and qmail-start's tree or Postfix's master."""
        if mta == "postfix":
            master = self.postfix.master_pid()
            return [master] if master else []
        listener = self.pyqmail.fast if mta == "pyqmail-fast" else self.pyqmail.server
        return [self.pyqmail.tree.pid, listener.pid]

    def scenario_smtp(self) -> None:
        self.start_mtas()
        variants = [("s10", "smtp-source -s 10 -m %d" % self.n, self.n, 10, False, self.rounds),
                    ("s1", "smtp-source -s 1 -m %d" % self.n, self.n, 1, False, self.rounds),
                    ("s10-d", "smtp-source -s 10 -d -m %d (%d per connection)" % (self.n, self.n // 10),
                     self.n, 10, True, self.rounds)]
        if self.big:
            variants.append(("s10-big", "smtp-source -s 10 -m %d" % self.big, self.big, 10, False, 1))
        for tag, title, n, sessions, per_connection, rounds in variants:
            self.say("smtp end to end: %s" % title)
            runs = self.interleave([("pyqmail", self.smtp_run("pyqmail", n, sessions, per_connection)),
                                    ("pyqmail-fast", self.smtp_run("pyqmail-fast", n, sessions, per_connection)),
                                    ("postfix", self.smtp_run("postfix", n, sessions, per_connection))],
                                   rounds)
            self.record("smtp-" + tag, "SMTP to Maildir/new: %s, 1 KB (higher is better); pyqmail under "
                        "tcpserver, pyqmail-fast under qmail-tcpsrv" % title,
                        "msg/s", runs, [("pyqmail", "postfix"), ("pyqmail-fast", "postfix")],
                        messages=n, verified=True)

    # -- scenario 2: sendmail

    def inject_run(self, mta: str, n: int, workers: int):
        box = self.qbox if mta == "pyqmail" else self.pbox
        if mta == "pyqmail":
            argv = [self.pyqmail.bin("sendmail"), "-i", "-f", SENDER, box.address]
        else:
            argv = self.postfix.sendmail_argv() + ["-f", SENDER, box.address]
        env = {"PATH": "/usr/bin:/bin"}

        def run():
            box.empty()
            left = [n]
            lock = threading.Lock()
            failures = []

            def worker():
                while True:
                    with lock:
                        if left[0] == 0 or failures:
                            return
                        left[0] -= 1
                    done = subprocess.run(argv, input=self.message, env=env, cwd="/",
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    if done.returncode != 0:
                        failures.append(done.stderr.decode(errors="replace")[:300])
            t0 = time.monotonic()
            threads = [threading.Thread(target=worker) for _ in range(workers)]
            try:
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            except BaseException:
                failures.append("interrupted")  # the workers stop after their current message
                raise
            if failures:
                raise BenchError("%s sendmail: %s" % (mta, failures[0]))
            seconds, timeline = wait_count(box.count, n, t0, max(300, n / 2))
            box.verify(n, self.message)
            self.drained(mta)
            box.empty()
            return n / seconds, {"seconds": round(seconds, 3), "count": n}
        return run

    def scenario_inject(self) -> None:
        self.start_mtas()
        workers = 4
        self.say("injection: %d messages through sendmail, %d at a time" % (self.n, workers))
        runs = self.interleave([("pyqmail", self.inject_run("pyqmail", self.n, workers)),
                                ("postfix", self.inject_run("postfix", self.n, workers))])
        self.record("inject", "sendmail to Maildir/new: %d messages, %d concurrent (higher is better)"
                    % (self.n, workers), "msg/s", runs, [("pyqmail", "postfix")], messages=self.n,
                    verified=True)

    def queue_through_service(self, n: int, address: str) -> None:
        """n copies of the message to address, queued one after the other by
        this process through pyqmail's queue service (qmail.Qmail, the code
        qmail-smtpd and qmail-inject queue with)."""
        home = self.pyqmail.home.encode()
        for _ in range(n):
            qq = qmail.Qmail(home, {})
            qq.open()
            qq.put(self.message)
            qq.from_(SENDER.encode())
            qq.to(address.encode())
            result = qq.close()
            if result:
                raise BenchError("queue service: %s" % result.decode(errors="replace"))

    # -- issue 5's burst: one long-running client queueing local mail

    def burst_run(self, n: int):
        """pyqmail: n messages queued through the queue service by one client
        (qmail.Qmail, the code qmail-smtpd and qmail-inject queue with), until
        the last is in Maildir/new."""
        box = self.qbox

        def run():
            box.empty()
            t0 = time.monotonic()
            self.queue_through_service(n, box.address)
            seconds, timeline = wait_count(box.count, n, t0, max(300, n / 2))
            box.verify(n, self.message)
            self.drained("pyqmail")
            box.empty()
            return n / seconds, {"seconds": round(seconds, 3), "count": n, "timeline": timeline}
        return run

    def scenario_local(self) -> None:
        self.start_mtas()
        self.say("local burst: %d messages from one client to Maildir/new" % self.n)
        runs = self.interleave([("pyqmail queue service", self.burst_run(self.n)),
                                ("postfix one SMTP session", self.smtp_run("postfix", self.n, 1, True))])
        self.record("local", "one client queues %d local messages, until the last is in Maildir/new "
                    "(higher is better): pyqmail through its queue service, Postfix over one "
                    "SMTP session (smtp-source -s 1 -d)" % self.n, "msg/s", runs,
                    [("pyqmail queue service", "postfix one SMTP session")], messages=self.n,
                    verified=True)

    # -- scenario 3: relay to smtp-sink

    def scenario_relay(self) -> None:
        self.start_mtas()
        n = max(1, self.n // 2)
        self.say("relay: %d messages to %s, routed to smtp-sink" % (n, RELAY))
        runs = self.interleave([("pyqmail", self.smtp_run("pyqmail", n, 10, False, relay=True)),
                                ("pyqmail-fast", self.smtp_run("pyqmail-fast", n, 10, False, relay=True)),
                                ("postfix", self.smtp_run("postfix", n, 10, False, relay=True))])
        self.record("relay", "relay through SMTP to smtp-sink: %d messages, -s 10 (higher is better); "
                    "pyqmail under tcpserver, pyqmail-fast under qmail-tcpsrv" % n, "msg/s", runs,
                    [("pyqmail", "postfix"), ("pyqmail-fast", "postfix")], messages=n, verified=True)

    # -- scenario 5: start-up

    def greeting_ms(self, port: int) -> float:
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            data = b""
            while not data.endswith(b"\r\n") or not data.split(b"\r\n")[-2][3:4] == b" ":
                chunk = s.recv(4096)
                if not chunk:
                    raise BenchError("no greeting on port %d" % port)
                data += chunk
            ms = (time.perf_counter() - t0) * 1000
            if not data.startswith(b"220"):
                raise BenchError("greeting on port %d: %r" % (port, data[:80]))
            s.sendall(b"QUIT\r\n")
            while s.recv(4096):
                pass
        return ms

    def scenario_startup(self) -> None:
        self.start_mtas()
        samples = 10 if self.quick else 30

        def greeting(port):
            def run():
                values = [self.greeting_ms(port) for _ in range(samples)]
                return statistics.median(values), {"samples": [round(v, 2) for v in values]}
            return run

        def python():
            values = []
            for _ in range(samples):
                t0 = time.perf_counter()
                subprocess.run([PYTHON, "-I", "-S", "-c", "pass"], check=True)
                values.append((time.perf_counter() - t0) * 1000)
            return statistics.median(values), {"samples": [round(v, 2) for v in values]}

        self.say("start-up: connect to greeting, median of %d" % samples)
        runs = self.interleave([("pyqmail qmail-smtpd", greeting(self.qport)),
                                ("python3 -I -S -c pass", python),
                                ("postfix smtpd", greeting(self.pport))])
        self.record("startup", "connect to 220 greeting, new connection (ms, lower is better)", "ms", runs,
                    [("pyqmail qmail-smtpd", "postfix smtpd"), ("pyqmail qmail-smtpd", "python3 -I -S -c pass")],
                    samples=samples)

    # -- scenario 6: memory

    def scenario_memory(self) -> None:
        self.start_mtas()
        q, p = self.pyqmail, self.postfix
        out: dict[str, list] = {}

        def one_connection(port: int, server_pid: int, comm: str) -> int:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                buf = b""
                while b"\r\n" not in buf:
                    buf += s.recv(4096)
                s.sendall(b"HELO client.bench\r\n")
                buf = b""
                while b"\r\n" not in buf:
                    buf += s.recv(4096)
                rss = max(rss_kb(pid) for pid in children(server_pid).get(comm, [0]))
                s.sendall(b"QUIT\r\n")
                while s.recv(4096):
                    pass
            return rss

        def record(name: str, kb: int) -> None:
            out[name] = [{"value": kb, "round": 1, "load": 0.0}]
            self.say("  %-34s %8d kB" % (name, kb))

        self.say("memory (RSS, kB)")
        self.before_run()
        record("pyqmail qmail-smtpd per connection",
               max(one_connection(self.qport, q.server.pid, "qmail-smtpd") for _ in range(3)))
        record("postfix smtpd per connection",
               max(one_connection(self.pport, p.master_pid(), "smtpd") for _ in range(3)))
        record("pyqmail qmail-send", rss_kb(q.tree.pid, "VmHWM"))
        master = children(p.master_pid())
        record("postfix qmgr", max(rss_kb(pid, "VmHWM") for pid in master.get("qmgr", [0])))

        # 20 concurrent 10 MB submissions: the queue service vs Postfix's smtpd+cleanup
        big = message_bytes(BIG)

        def sample(pids_of, stop, peak):
            while not stop:
                for pid in pids_of():
                    peak[0] = max(peak[0], rss_kb(pid))
                time.sleep(0.01)

        def under_load(pids_of, load, box: Mailbox, mta: str, expect: bytes) -> int:
            box.empty()
            stop, peak = [], [0]
            t = threading.Thread(target=sample, args=(pids_of, stop, peak))
            t.start()
            try:
                load()
            finally:
                stop.append(True)
                t.join()
            wait_count(box.count, 20, time.monotonic(), 300)
            box.verify(20, expect)
            self.drained(mta)
            box.empty()
            return peak[0]

        def pyqmail_load():
            errors = []

            def submit():
                qq = qmail.Qmail(q.home.encode(), {})
                qq.open()
                for i in range(0, BIG, 65536):
                    qq.put(big[i:i + 65536])
                qq.from_(SENDER.encode())
                qq.to(self.qbox.address.encode())
                result = qq.close()
                if result:
                    errors.append(result)
            threads = [threading.Thread(target=submit) for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise BenchError("queue service: %r" % errors[0])

        bigfile = os.path.join(self.base, "big")
        with open(bigfile, "wb") as f:
            f.write(big)

        def postfix_load():
            argv = ["smtp-source", "-s", "20", "-m", "20", "-F", bigfile, "-f", SENDER,
                    "-t", self.pbox.address, "-M", "client.bench", "127.0.0.1:%d" % self.pport]
            done = subprocess.run(argv, capture_output=True, timeout=600)
            if done.returncode != 0:
                raise BenchError("smtp-source: %s" % done.stderr.decode(errors="replace")[:300])

        self.before_run()
        record("pyqmail queue service, 20 x 10 MB",
               under_load(lambda: children(q.tree.pid).get("qmail-queued", []), pyqmail_load, self.qbox, "pyqmail", big))
        self.before_run()
        record("postfix smtpd+cleanup, 20 x 10 MB (max)",
               under_load(lambda: [pid for comm, pids in children(p.master_pid()).items()
                                   if comm in ("smtpd", "cleanup") for pid in pids],
                          postfix_load, self.pbox, "postfix", big + b"\n"))
        os.unlink(bigfile)
        self.record("memory", "resident set size (kB, lower is better)", "kB", out,
                    [("pyqmail qmail-smtpd per connection", "postfix smtpd per connection"),
                     ("pyqmail qmail-send", "postfix qmgr"),
                     ("pyqmail queue service, 20 x 10 MB", "postfix smtpd+cleanup, 20 x 10 MB (max)")])

    # -- scenario 7: silly qmail

    def latency_ms(self) -> float:
        """One message through the queue service until it is in Maildir/new."""
        box = self.qbox
        box.empty()
        t0 = time.monotonic()
        qq = qmail.Qmail(self.pyqmail.home.encode(), {})
        qq.open()
        qq.put(self.message)
        qq.from_(SENDER.encode())
        qq.to(box.address.encode())
        result = qq.close()
        if result:
            raise BenchError("queue service: %s" % result.decode(errors="replace"))
        seconds, _ = wait_count(box.count, 1, t0, 120, interval=0.001)
        box.verify(1, self.message)
        box.empty()
        return seconds * 1000

    def write_deferred(self, count: int) -> None:
        """count messages already preprocessed for DEAD and not due for a week:
        mess/, info/ and remote/ files as qmail-queue and qmail-send leave them."""
        queue = os.path.join(self.pyqmail.home, "queue")
        qmailq, qmails = pwd.getpwnam("qmailq").pw_uid, pwd.getpwnam("qmails").pw_uid
        gid = auto.GID_QMAIL
        now = time.time()
        due = now + 7 * 86400 - 3600
        mess = b"Received: (qmail 1 invoked by uid 0); 1 Jan 2025 00:00:00 -0000\n" + self.message
        info = b"F%s\0" % SENDER.encode()
        remote = b"T%s@%s\0" % (self.qbox.name.encode(), DEAD.encode())
        tmp = os.path.join(queue, "pid", "bench")
        for _ in range(count):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, mess)
            os.fchown(fd, qmailq, gid)
            ino = os.fstat(fd).st_ino
            os.close(fd)
            part = str(ino % auto.SPLIT)
            os.rename(tmp, os.path.join(queue, "mess", part, str(ino)))
            for sub, data, mtime in (("info", info, now), ("remote", remote, due)):
                path = os.path.join(queue, sub, part, str(ino))
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, data)
                os.fchown(fd, qmails, gid)
                os.close(fd)
                os.utime(path, (mtime, mtime))

    def remove_deferred(self) -> None:
        queue = os.path.join(self.pyqmail.home, "queue")
        for sub in ("mess", "info", "remote", "local"):
            for part in os.listdir(os.path.join(queue, sub)):
                d = os.path.join(queue, sub, part)
                for name in os.listdir(d):
                    os.unlink(os.path.join(d, name))

    def wait_quiet(self, pid: int, timeout: float) -> None:
        """Until the process uses no CPU for half a second (qmail-send's start-up scan done)."""
        def ticks():
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        deadline = time.monotonic() + timeout
        last = ticks()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = ticks()
            if now == last:
                return
            last = now

    def scenario_silly(self) -> None:
        q = self.pyqmail
        samples = 5 if self.quick else 10
        self.say("silly qmail: latency of one message, 0 and %d deferred" % self.deferred)

        def latency():
            values = [self.latency_ms() for _ in range(samples)]
            return statistics.median(values), {"samples": [round(v, 2) for v in values]}

        runs = {}
        self.start_mtas()
        self.drained("pyqmail")
        q.stop_tree()
        q.start_tree()
        self.wait_quiet(q.tree.pid, 60)
        runs.update(self.interleave([("0 deferred", latency)], 1))
        rss = {"0 deferred": rss_kb(q.tree.pid)}
        q.stop_tree()
        t0 = time.monotonic()
        self.write_deferred(self.deferred)
        self.say("  wrote %d deferred messages in %.1f s" % (self.deferred, time.monotonic() - t0))
        try:
            t0 = time.monotonic()
            q.start_tree()
            self.wait_quiet(q.tree.pid, 600)
            scan = time.monotonic() - t0
            self.say("  qmail-send start-up with them: %.1f s" % scan)
            runs.update(self.interleave([("%d deferred" % self.deferred, latency)], 1))
            rss["%d deferred" % self.deferred] = rss_kb(q.tree.pid)
            self.say("  qmail-send RSS: %s kB" % rss)
            # the measured messages leave the queue just after their delivery
            deadline = time.monotonic() + 60
            while (left := q.queue_files()) != self.deferred:
                if time.monotonic() > deadline:
                    raise BenchError("silly: %d messages in the queue, expected the %d deferred"
                                     % (left, self.deferred))
                time.sleep(0.05)
        finally:
            q.stop_tree()
            self.remove_deferred()
        q.start_tree()
        self.record("silly", "pyqmail: one new message to Maildir/new (ms, lower is better)", "ms", runs,
                    [("%d deferred" % self.deferred, "0 deferred")], deferred=self.deferred,
                    samples=samples, startup_scan_seconds=round(scan, 2), qmail_send_rss_kb=rss)

    # -- the whole run

    def run(self) -> None:
        chosen = self.args.only.split(",") if self.args.only else list(SCENARIOS)
        unknown = set(chosen) - set(SCENARIOS)
        if unknown:
            raise BenchError("unknown scenario %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(SCENARIOS)))
        started = time.monotonic()
        self.setup()
        self.say("settling: sync, %d s pause" % self.settle)
        os.sync()
        time.sleep(self.settle)
        try:
            for name in SCENARIOS:
                if name in chosen:
                    getattr(self, "scenario_" + name)()
        finally:
            self.elapsed = time.monotonic() - started

    def report(self) -> str:
        date = datetime.datetime.now()
        head = {"date": date.isoformat(timespec="seconds"), "cores": self.cores,
                "filesystem": filesystem_type(self.base), "python": PYTHON,
                "python_version": subprocess.run([PYTHON, "-c", "import sys; print(sys.version.split()[0])"],
                                                 capture_output=True, text=True).stdout.strip(),
                "postfix": subprocess.run(["postconf", "-dh", "mail_version"], capture_output=True,
                                          text=True).stdout.strip(),
                "kernel": platform.release(), "quick": self.quick, "rounds": self.rounds,
                "messages": self.n, "settle_seconds": self.settle,
                "load_before_runs": {"min": min(self.loads, default=0), "max": max(self.loads, default=0),
                                     "median": statistics.median(self.loads) if self.loads else 0},
                "elapsed_seconds": round(self.elapsed)}
        lines = ["pyqmail benchmark %s: %d cores, %s, %s %s, Postfix %s" % (
                    head["date"], self.cores, head["filesystem"], PYTHON, head["python_version"], head["postfix"]),
                 "rounds %d, settle %d s, busy before runs: median %.0f%%, max %.0f%% of the machine; %d s in all"
                 % (self.rounds, self.settle, 100 * head["load_before_runs"]["median"],
                    100 * head["load_before_runs"]["max"], head["elapsed_seconds"]), ""]
        for res in self.results:
            lines.append("%s: %s" % (res["scenario"], res["title"]))
            lines.append("  %-48s %10s %10s %10s" % ("", "min", "median", "max"))
            for name, fig in res["figures"].items():
                lines.append("  %-48s %10.2f %10.2f %10.2f  %s" % (name, fig["min"], fig["median"], fig["max"], res["unit"]))
            for name, value in res["ratio"].items():
                lines.append("  ratio %-42s %10.3f" % (name, value))
            cpu = {name: statistics.median(r["cpu_ms_per_message"] for r in fig["detail"])
                   for name, fig in res["figures"].items()
                   if all("cpu_ms_per_message" in r for r in fig["detail"])}
            if cpu:
                lines.append("  CPU per message (ms, median): " + ", ".join(
                    "%s %.2f" % (name, value) for name, value in cpu.items()))
            lines.append("")
        out_dir = self.args.out
        os.makedirs(out_dir, exist_ok=True)
        stamp = date.strftime("%Y%m%d-%H%M%S")
        path = os.path.join(out_dir, "results-%s.json" % stamp)
        with open(path, "w") as f:
            json.dump({"run": head, "scenarios": self.results}, f, indent=1)
        lines.append("results: %s" % path)
        chart = self.chart(path, os.path.join(out_dir, "smtp-%s.png" % stamp))
        if chart:
            lines.append("chart: %s" % chart)
        return "\n".join(lines)

    def chart(self, results: str, png: str) -> str | None:
        python = self.args.chart_python
        if not any(r["scenario"] == "smtp-s10" for r in self.results):
            return None
        if not python or not os.access(python, os.X_OK):
            self.say("bench: no chart (no bench venv python at %s; make bench creates it)" % python)
            return None
        done = subprocess.run([python, os.path.join(HERE, "chart.py"), results, png], capture_output=True)
        if done.returncode != 0:
            self.say("bench: chart failed: %s" % done.stderr.decode(errors="replace")[-500:])
            return None
        return png


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="200 messages, one round, short settle")
    p.add_argument("--messages", type=int, help="messages per run (2000; 200 quick)")
    p.add_argument("--big", type=int, help="messages of the one long SMTP run (20000; none quick; 0 = skip)")
    p.add_argument("--deferred", type=int, help="deferred messages for the silly-qmail check (50000; 5000 quick)")
    p.add_argument("--rounds", type=int, help="rounds (3; 1 quick)")
    p.add_argument("--settle", type=int, help="seconds of pause after sync before the first run (60; 3 quick)")
    p.add_argument("--only", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    p.add_argument("--out", default=os.path.join(SRC, "bench-results"), help="results directory")
    p.add_argument("--tmp", default="/var/tmp", help="where the MTAs' queues and mailboxes live")
    p.add_argument("--chart-python", default=os.path.join(SRC, "build", "bench-venv", "bin", "python"))
    p.add_argument("--keep", action="store_true", help="keep the temporary tree (logs) afterwards")
    return p.parse_args(argv)


def main() -> None:
    args = parse_args(sys.argv[1:])
    if os.geteuid() != 0:
        sys.exit("bench: run as root (it installs pyqmail with the real uids and starts Postfix)")

    def terminated(*_):
        raise Terminated()
    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, terminated)
    bench = Bench(args)
    try:
        bench.run()
        print(bench.report(), flush=True)
    except BenchError as e:
        # the scenarios done so far still count: their table and results file
        if bench.results:
            print(bench.report(), flush=True)
        print("bench: failed: %s" % e, file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, Terminated):
        print("bench: interrupted; stopping everything it started", file=sys.stderr)
        sys.exit(130)
    finally:
        bench.cleanup()


if __name__ == "__main__":
    main()
