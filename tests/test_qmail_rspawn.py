"""qmail-rspawn (spec/remote.md §2, spec/send.md §7): driven over its pipes as
qmail-send drives it, running as qmailr, delivering to scripted SMTP peers."""
import os
import select
import shutil
import subprocess
import threading
import time

import pytest

from conftest import install, need_root, public_tmpdir, uid
from remote_peers import Peer
from pyqmail import qmail_rspawn

SPAWN = 120


# -- the report translation (§2.4) ----------------------------------------------

def ok(code=0):
    return code << 8


@pytest.mark.parametrize("out,report", [
    (b"r\0K1.2.3.4 accepted message.\nsaid\n\0", b"K1.2.3.4 accepted message.\nsaid\n"),
    (b"r\0Zx\n\0", b"Zx\n"),
    (b"r\0Dx\n\0", b"Dx\n"),
    (b"hT1\n\0DT2\n\0", b"DT1\nT2\n"),
    (b"sT1\n\0DT2\n\0", b"ZT1\nT2\n"),
    (b"sT1\n\0KT2\n\0", b"ZT1\n"),           # the message went, this recipient did not
    (b"hT1\n\0ZT2\n\0", b"DT1\n"),
    (b"ZT\n\0", b"ZT\n"),
    (b"DT\n\0", b"DT\n"),
    (b"KT\n\0", b"KT\n"),
    (b"r\0", b"D"),                         # no K/Z/D record: permanent
    (b"xyz", b"D"),                         # no NUL: the letter alone
    (b"r\0Kunterminated", b"Dunterminated"),   # C prints it up to a NUL
])
def test_report(out, report):
    assert qmail_rspawn.report(ok(), out) == report


def test_report_exit_status():
    assert qmail_rspawn.report(9, b"r\0K\0") == b"Zqmail-remote crashed.\n"
    assert qmail_rspawn.report(ok(111), b"r\0K\0") == b"ZUnable to run qmail-remote.\n"
    assert qmail_rspawn.report(ok(100), b"") == b"DUnable to run qmail-remote.\n"
    assert qmail_rspawn.report(ok(1), b"") == b"DUnable to run qmail-remote.\n"
    assert qmail_rspawn.report(ok(), b"") == b"Zqmail-remote produced no output.\n"


# -- the running program -------------------------------------------------------------

@pytest.fixture(scope="module")
def home():
    need_root()
    base = public_tmpdir("pyqmail-rspawn-")
    path = os.path.join(base, "qmail")
    done = install(path)
    assert done.returncode == 0, done.stderr.decode()
    with open(os.path.join(path, "control/me"), "w") as f:
        f.write("me.test\n")
    yield path
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def peer():
    peers = []

    def start(**kw):
        p = Peer(**kw)
        peers.append(p)
        return p
    yield start
    for p in peers:
        p.close()


def queue_message(home, inode, body, owner="qmailq", split=None):
    """queue/mess/N/ID as qmail-queue leaves it; the path relative to queue/mess."""
    split = inode % 23 if split is None else split
    rel = "%d/%d" % (split, inode)
    path = os.path.join(home, "queue/mess", rel)
    with open(path, "wb") as f:
        f.write(body)
    os.chown(path, uid(owner), -1)
    os.chmod(path, 0o644)
    return rel


class Rspawn:
    """bin/qmail-rspawn as qmailr:qmail with qmail-send's pipes."""

    def __init__(self, home, env=None):
        self.proc = subprocess.Popen([os.path.join(home, "bin/qmail-rspawn")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, user=uid("qmailr"),
                                     group="qmail", extra_groups=[], cwd="/",
                                     env=dict(env or {}, PATH="/usr/bin:/bin"))
        self.buf = b""

    def fill(self, deadline):
        left = deadline - time.monotonic()
        assert left > 0, "qmail-rspawn said nothing"
        if select.select([self.proc.stdout], [], [], left)[0]:
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            assert chunk, "qmail-rspawn closed its output"
            self.buf += chunk

    def read(self, n, timeout=30):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self.fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def command(self, slot, messid, sender, recip):
        self.proc.stdin.write(bytes((slot,)) + messid + b"\0" + sender + b"\0" + recip + b"\0")
        self.proc.stdin.flush()

    def report(self, timeout=30):
        """(slot, report text) of the next report."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf[1:]:
            self.fill(deadline)
        end = self.buf.index(b"\0", 1)
        slot, text, self.buf = self.buf[0], self.buf[1:end], self.buf[end + 1:]
        return slot, text

    def close(self):
        """EOF on fd 0: qmail-rspawn exits 0 once nothing runs."""
        self.proc.stdin.close()
        try:
            code = self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return code, self.proc.stdout.read(), self.proc.stderr.read()


@pytest.fixture
def rspawn(home):
    started = []

    def start(env=None):
        r = Rspawn(home, env)
        started.append(r)
        assert r.read(1) == bytes((SPAWN,))
        return r
    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def route(home, text):
    with open(os.path.join(home, "control/smtproutes"), "w") as f:
        f.write(text)


def test_start_clears_tcpto_and_exits_on_eof(home, rspawn):
    for table in ("tcpto", "tcpto6"):
        with open(os.path.join(home, "queue/lock", table), "r+b") as f:
            f.write(b"\x7f\0\0\1\2\0\0\0\1\2\3\4")
    r = rspawn()
    for table in ("tcpto", "tcpto6"):
        with open(os.path.join(home, "queue/lock", table), "rb") as f:
            assert f.read() == b"\0" * 1024
    assert r.close() == (0, b"", b"")


def test_front_end_errors(home, rspawn):
    good = queue_message(home, 101, b"x\n").encode()
    wrong_owner = queue_message(home, 102, b"x\n", owner="root").encode()
    r = rspawn()
    cases = [
        ((SPAWN, good, b"a@x", b"b@y"), b"ZInternal error: delnum too big. (#4.3.5)\n"),
        ((1, b"1x/2", b"a@x", b"b@y"), b"DInternal error: messid has nonnumerics. (#5.3.5)\n"),
        ((1, b"/1", b"a@x", b"b@y"), b"DInternal error: messid has nonnumerics. (#5.3.5)\n"),
        ((1, b"1" * 100, b"a@x", b"b@y"), b"DInternal error: messid too long. (#5.3.5)\n"),
        ((1, b"", b"a@x", b"b@y"), b"DInternal error: messid too short. (#5.3.5)\n"),
        ((1, good, b"a@x", b"nohost"), b"DSorry, address must include host name. (#5.1.3)\n"),
        ((1, b"1/99999", b"a@x", b"b@y"), b"Zqmail-spawn unable to open message. (#4.3.0)\n"),
        ((1, wrong_owner, b"a@x", b"b@y"), b"ZSorry, message has wrong owner. (#4.3.5)\n"),
        ((1, b"1", b"a@x", b"b@y"), b"ZSorry, message has wrong type. (#4.3.5)\n"),
    ]
    for (slot, messid, sender, recip), text in cases:
        r.command(slot, messid, sender, recip)
        assert r.report() == (slot, text)
    assert r.close() == (0, b"", b"")


def test_delivery_and_rejection_reports(home, rspawn, peer):
    p = peer(replies={"RCPT no@peer.test": b"550-no\r\n550 such user\r\n",
                      "RCPT later@peer.test": b"450 mailbox busy\r\n"})
    route(home, "peer.test:127.0.0.1:%d\n" % p.port)
    messid = queue_message(home, 201, b"Subject: hi\n\n.dot\n").encode()
    r = rspawn()
    r.command(7, messid, b"a@x.test", b"yes@peer.test")
    assert r.report() == (7, b"K127.0.0.1 accepted message.\n"
                             b"Remote host said: 250 ok 1709629621 qp 4242\n")
    r.command(7, messid, b"a@x.test", b"no@peer.test")
    assert r.report() == (7, b"D127.0.0.1 does not like recipient.\n"
                             b"Remote host said: 550-no\n550 such user\n"
                             b"Giving up on 127.0.0.1.\n")
    r.command(8, messid, b"", b"later@peer.test")
    assert r.report() == (8, b"Z127.0.0.1 does not like recipient.\n"
                             b"Remote host said: 450 mailbox busy\n"
                             b"Giving up on 127.0.0.1.\n")
    assert r.close() == (0, b"", b"")
    assert p.sessions[0].data == b"Subject: hi\r\n\r\n..dot\r\n.\r\n"
    assert p.sessions[0].lines[1:3] == [b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<yes@peer.test>\r\n"]
    assert p.sessions[2].lines[1] == b"MAIL FROM:<>\r\n"


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    with open("/proc/%s/comm" % entry) as f:
                        comm = f.read().strip()
                    with open("/proc/%s/cmdline" % entry, "rb") as f:
                        argv0 = f.read().split(b"\0", 1)[0]
                    # INTERFACE.md §3: comm and argv[0] both name the program
                    out.append(comm if argv0 == comm.encode() else (comm, argv0))
            except OSError:
                pass
    return out


def test_concurrent_deliveries(home, rspawn, peer):
    n = 5
    gate = threading.Barrier(n + 1)
    p = peer(gate=gate)
    route(home, "peer.test:127.0.0.1:%d\n" % p.port)
    messids = [queue_message(home, 300 + i, b"Subject: %d\n\nbody\n" % i).encode()
               for i in range(n)]
    r = rspawn()
    for i in range(n):
        r.command(10 + i, messids[i], b"a@x.test", b"rcpt%d@peer.test" % i)
    # every delivery is connected and waiting at once: they run concurrently,
    # each in a child that calls itself qmail-remote
    deadline = time.monotonic() + 30
    while len(p.sessions) < n:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert children(r.proc.pid) == ["qmail-remote"] * n
    gate.wait(timeout=10)
    reports = dict(r.report() for _ in range(n))
    assert reports == {10 + i: b"K127.0.0.1 accepted message.\n"
                               b"Remote host said: 250 ok 1709629621 qp 4242\n" for i in range(n)}
    assert r.close() == (0, b"", b"")
    bodies = sorted(s.data for s in p.sessions)
    assert bodies == [b"Subject: %d\r\n\r\nbody\r\n.\r\n" % i for i in range(n)]
    # a slot in use is refused while its delivery runs
    gate2 = threading.Barrier(2)
    p2 = peer(gate=gate2)
    route(home, "peer.test:127.0.0.1:%d\n" % p2.port)
    r = rspawn()
    r.command(3, messids[0], b"a@x.test", b"b@peer.test")
    while not p2.sessions:
        time.sleep(0.01)
    r.command(3, messids[1], b"a@x.test", b"c@peer.test")
    assert r.report() == (3, b"ZInternal error: delnum in use. (#4.3.5)\n")
    gate2.wait(timeout=10)
    assert r.report()[0] == 3
    assert r.close()[0] == 0


@pytest.fixture
def scripts():
    base = public_tmpdir("pyqmail-qr-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def script(base, name, body):
    path = os.path.join(base, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


def test_qmailremote_hook(home, rspawn, scripts):
    messid = queue_message(home, 401, b"Subject: hook\n\nbody\n").encode()
    args = os.path.join(scripts, "args")
    os.chmod(scripts, 0o777)
    fake = script(scripts, "fake", 'printf "%%s|" "$0" "$@" > %s; cat > %s.msg; env > %s.env\n'
                  'printf "r\\0Kfake accepted.\\n\\0"\n' % (args, args, args))
    r = rspawn({"QMAILREMOTE": fake})
    r.command(0, messid, b"a@x.test", b"b@Some.Host@peer.test")
    assert r.report() == (0, b"Kfake accepted.\n")
    assert r.close() == (0, b"", b"")
    with open(args, "rb") as f:
        assert f.read() == fake.encode() + b"|peer.test|a@x.test|b@Some.Host@peer.test|"
    with open(args + ".msg", "rb") as f:
        assert f.read() == b"Subject: hook\n\nbody\n"
    # qmail-rspawn's environment, not the locale its interpreter coerced (PEP 538)
    with open(args + ".env", "rb") as f:
        assert sorted(e for e in f.read().split(b"\n")[:-1] if not e.startswith(b"PWD=")) == [
            b"PATH=/usr/bin:/bin", b"QMAILREMOTE=" + fake.encode()]


@pytest.mark.parametrize("body,report", [
    ("exit 111\n", b"ZUnable to run qmail-remote.\n"),
    ("exit 3\n", b"DUnable to run qmail-remote.\n"),
    ("kill -9 $$\n", b"Zqmail-remote crashed.\n"),
    ("exit 0\n", b"Zqmail-remote produced no output.\n"),
    ('printf "hno\\n\\0DGiving up.\\n\\0"\n', b"Dno\nGiving up.\n"),
    (None, b"DUnable to run qmail-remote.\n"),   # no such program: exec fails, ENOENT
])
def test_qmailremote_exit_statuses(home, rspawn, scripts, body, report):
    messid = queue_message(home, 402, b"x\n").encode()
    program = os.path.join(scripts, "missing") if body is None else script(scripts, "qr", body)
    r = rspawn({"QMAILREMOTE": program})
    r.command(2, messid, b"a@x.test", b"b@peer.test")
    assert r.report() == (2, report)
    assert r.close() == (0, b"", b"")
