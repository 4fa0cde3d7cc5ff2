"""qmail-lspawn driven over its pipes as qmail-send drives it (spec/send.md §7,
spec/local.md §2-§3): framing, front-end checks, user lookup, privileges,
report texts."""
import os
import select
import shutil
import subprocess
import time

import pytest

from conftest import install, need_root, public_tmpdir, uid
from localusers import Users
from pyqmail import cdb

MESSAGE = b"Received: (qmail 1 invoked by uid 0); x\nSubject: spawn\n\nbody\n"


@pytest.fixture(scope="module")
def home():
    need_root()
    base = public_tmpdir("pyqmail-lspawn-")
    path = os.path.join(base, "qmail")
    done = install(path)
    assert done.returncode == 0, done.stderr.decode()
    yield path
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def accounts():
    need_root()
    made = Users()
    yield made
    made.cleanup()


@pytest.fixture
def user(accounts):
    return accounts.make("s%d" % len(accounts.names))


@pytest.fixture(autouse=True)
def no_users_cdb(home):
    yield
    for name in ("cdb", "assign"):
        try:
            os.unlink(os.path.join(home, "users", name))
        except FileNotFoundError:
            pass


def queue_message(home, data=MESSAGE, owner="qmailq", inode_dir="7"):
    """A message file in queue/mess/7/, named by its inode as qmail-queue names it."""
    d = os.path.join(home, "queue", "mess", inode_dir)
    tmp = os.path.join(d, "new")
    with open(tmp, "wb") as f:
        f.write(data)
    ino = os.stat(tmp).st_ino
    path = os.path.join(d, str(ino))
    os.rename(tmp, path)
    os.chown(path, uid(owner), -1)
    os.chmod(path, 0o644)
    return b"%s/%d" % (inode_dir.encode(), ino)


class LSpawn:
    def __init__(self, home, default=b"./Maildir/", env=None):
        self.proc = subprocess.Popen([os.path.join(home, "bin", "qmail-lspawn"), default],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env or {"PATH": "/usr/bin:/bin"})
        self.buf = b""
        self.greeting = self.read(1)

    def read(self, n):
        while len(self.buf) < n:
            ready, _, _ = select.select([self.proc.stdout], [], [], 30)
            assert ready, "qmail-lspawn said nothing for 30s"
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            assert chunk, "qmail-lspawn closed its output"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, slot, messid, sender, recipient):
        self.proc.stdin.write(bytes((slot,)) + messid + b"\0" + sender + b"\0" + recipient + b"\0")
        self.proc.stdin.flush()

    def report(self):
        slot = self.read(1)[0]
        text = b""
        while not text.endswith(b"\0"):
            text += self.read(1)
        return slot, text[:-1]

    def deliver(self, messid, sender, recipient, slot=0):
        self.send(slot, messid, sender, recipient)
        return self.report()

    def close(self):
        self.proc.stdin.close()
        code = self.proc.wait(timeout=30)
        rest = self.proc.stdout.read()
        self.proc.stdout.close()
        return code, self.buf + rest


@pytest.fixture
def spawner(home):
    s = LSpawn(home)
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()
    for f in (s.proc.stdin, s.proc.stdout):
        if not f.closed:
            f.close()


def test_greeting_and_clean_exit(spawner):
    assert spawner.greeting == bytes((120,))
    assert spawner.close() == (0, b"")


def test_delivers_through_qmail_getpw_as_the_user(home, spawner, user):
    user.maildir()
    messid = queue_message(home)
    slot, text = spawner.deliver(messid, b"a@b.example", user.name.encode() + b"@Host.Example", slot=3)
    assert (slot, text) == (3, b"Kdid 1+0+0\n")
    new = os.path.join(user.home, "Maildir", "new")
    (name,) = os.listdir(new)
    st = os.stat(os.path.join(new, name))
    assert (st.st_uid, st.st_gid) == (user.uid, user.gid)
    with open(os.path.join(new, name), "rb") as f:
        assert f.read() == (b"Return-Path: <a@b.example>\nDelivered-To: %s@Host.Example\n"
                            % user.name.encode() + MESSAGE)


def test_extension_and_case_via_getpw(home, spawner, user):
    user.write(".qmail-foo:bar", b"|echo \"$USER $EXT $LOCAL $HOST\"\n")
    messid = queue_message(home)
    local = user.name.upper().encode() + b"-Foo.Bar"
    assert spawner.deliver(messid, b"", local + b"@h.example") == (
        0, b"K%s Foo.Bar %s h.example\ndid 0+0+1\n" % (user.name.encode(), local))


def test_long_extension_reaches_qmail_local_whole(home, spawner, user):
    """qmail-getpw gets the whole local part, however long (the resident one
    reads 2048 bytes at a time)."""
    user.write(".qmail-default", b"|echo ${#EXT} ${#DEFAULT}\n")
    messid = queue_message(home)
    local = user.name.encode() + b"-" + b"x" * 5000
    assert spawner.deliver(messid, b"", local + b"@h.example") == (0, b"K5000 5000\ndid 0+0+1\n")


def test_unknown_and_root_go_to_alias(home, spawner):
    messid = queue_message(home)
    alias_home = os.path.expanduser("~alias").encode()
    for local in (b"root", b"Root", b"root-x", b"nosuch-user", b"../../etc", b"a/b"):
        slot, text = spawner.deliver(messid, b"", local + b"@h")
        if os.path.isdir(alias_home):
            assert text[:1] in (b"K", b"Z", b"D")
        else:
            assert text == b"ZUnable to switch to %s: file does not exist. (#4.3.0)\n" % alias_home


def write_cdb(home, records):
    path = os.path.join(home, "users", "cdb").encode()
    cdb.make(path, path + b".tmp", records)


def test_users_cdb_beats_passwd(home, spawner, accounts, user):
    other = accounts.make("o%d" % len(accounts.names))
    other.maildir()
    with open(os.path.join(home, "users", "assign"), "wb") as f:
        f.write(b"=%s:%s:%d:%d:%s:::\n+pre-:%s:%d:%d:%s:-:x:\n.\n" % (
            user.name.encode(), other.name.encode(), other.uid, other.gid, other.home.encode(),
            other.name.encode(), other.uid, other.gid, other.home.encode()))
    assert subprocess.run([os.path.join(home, "bin", "qmail-newu")]).returncode == 0
    messid = queue_message(home)
    assert spawner.deliver(messid, b"s@x", user.name.upper().encode() + b"@h") == (0, b"Kdid 1+0+0\n")
    assert len(os.listdir(os.path.join(other.home, "Maildir", "new"))) == 1
    assert not os.path.exists(os.path.join(user.home, "Maildir"))
    other.write(".qmail-xrest", b"|echo \"$EXT\"\n")
    assert spawner.deliver(messid, b"s@x", b"PRE-Rest@h") == (0, b"KxRest\ndid 0+0+1\n")


@pytest.mark.parametrize("value", [b"root\x000\x000\x00/root\x00\x00", b"x\x00abc\x000\x00/\x00\x00"])
def test_uid_zero_is_never_used(home, spawner, value):
    write_cdb(home, [(b"!victim\0", value), (b"", b"")])
    messid = queue_message(home)
    assert spawner.deliver(messid, b"s@x", b"victim@h") == (
        0, b"ZNot allowed to perform deliveries as root.\n")


def test_short_users_cdb_record_is_internal_bug(home, spawner):
    write_cdb(home, [(b"!bad\0", b"x\x001\x001\x00/"), (b"", b"")])
    assert spawner.deliver(queue_message(home), b"", b"bad@h") == (0, b"ZInternal qmail-lspawn bug.\n")


def test_users_cdb_without_wildcard_record(home, spawner):
    write_cdb(home, [(b"!a\0", b"a\x001\x001\x00/\x00\x00")])
    assert spawner.deliver(queue_message(home), b"", b"a@h") == (
        0, b"ZTrouble reading users/cdb in qmail-lspawn.\n")


def test_front_end_checks(home, spawner):
    good = queue_message(home)
    assert spawner.deliver(good, b"", b"nohost", slot=1) == (1, b"DSorry, address must include host name. (#5.1.3)\n")
    assert spawner.deliver(b"7/x1", b"", b"a@h") == (0, b"DInternal error: messid has nonnumerics. (#5.3.5)\n")
    assert spawner.deliver(b"/7", b"", b"a@h") == (0, b"DInternal error: messid has nonnumerics. (#5.3.5)\n")
    assert spawner.deliver(b"7" * 101, b"", b"a@h") == (0, b"DInternal error: messid too long. (#5.3.5)\n")
    assert spawner.deliver(b"", b"", b"a@h") == (0, b"DInternal error: messid too short. (#5.3.5)\n")
    assert spawner.deliver(b"7/1", b"", b"a@h") == (0, b"Zqmail-spawn unable to open message. (#4.3.0)\n")
    assert spawner.deliver(b"7", b"", b"a@h") == (0, b"ZSorry, message has wrong type. (#4.3.5)\n")
    rootmsg = queue_message(home, owner="root")
    assert spawner.deliver(rootmsg, b"", b"a@h") == (0, b"ZSorry, message has wrong owner. (#4.3.5)\n")
    assert spawner.deliver(good, b"", b"a@h", slot=120) == (120, b"ZInternal error: delnum too big. (#4.3.5)\n")
    assert spawner.deliver(good, b"", b"@h", slot=119) == (119, b"K")


def test_results_in_completion_order_and_slot_in_use(home, spawner, user):
    fifo = os.path.join(user.home, "fifo")
    os.mkfifo(fifo)
    os.chown(fifo, user.uid, user.gid)
    user.write(".qmail-slow", b"|cat fifo\n")
    user.write(".qmail-fast", b"|echo fast\n")
    messid = queue_message(home)
    spawner.send(5, messid, b"", user.name.encode() + b"-slow@h")
    spawner.send(5, messid, b"", user.name.encode() + b"-fast@h")
    assert spawner.report() == (5, b"ZInternal error: delnum in use. (#4.3.5)\n")
    spawner.send(6, messid, b"", user.name.encode() + b"-fast@h")
    assert spawner.report() == (6, b"Kfast\ndid 0+0+1\n")
    with open(fifo, "wb") as f:
        f.write(b"released\n")
    assert spawner.report() == (5, b"Kreleased\ndid 0+0+1\n")


def test_eof_waits_for_running_deliveries(home, spawner, user):
    fifo = os.path.join(user.home, "fifo")
    os.mkfifo(fifo)
    os.chown(fifo, user.uid, user.gid)
    user.write(".qmail", b"|cat fifo\n")
    spawner.send(9, queue_message(home), b"", user.name.encode() + b"@h")
    spawner.proc.stdin.close()
    with open(fifo, "wb") as f:
        f.write(b"late\n")
    code, rest = spawner.close()
    assert (code, rest) == (0, b"\x09Klate\ndid 0+0+1\n\0")


@pytest.mark.parametrize("exitcode,letter", [(0, b"K"), (111, b"Z"), (71, b"Z"), (74, b"Z"),
                                             (75, b"Z"), (100, b"D"), (99, b"K"), (1, b"Z")])
def test_program_exit_codes_become_letters(home, spawner, user, exitcode, letter):
    user.write(".qmail", b"|echo said; exit %d\n" % exitcode)
    slot, text = spawner.deliver(queue_message(home), b"", user.name.encode() + b"@h")
    assert text[:1] == letter
    assert text[1:].startswith(b"said\n")


def test_long_report_is_cut(home, spawner, user):
    user.write(".qmail", b"|head -c 5000 /dev/zero | tr '\\0' x; exit 100\n")
    slot, text = spawner.deliver(queue_message(home), b"", user.name.encode() + b"@h")
    assert text == b"D" + b"x" * 2966 + b"\nError report too long, sorry.\n"


def test_report_stops_at_nul(home, spawner, user):
    user.write(".qmail", b"|printf 'a\\0b'; exit 100\n")
    assert spawner.deliver(queue_message(home), b"", user.name.encode() + b"@h") == (0, b"Da")


def test_child_is_named_qmail_local(home, spawner, user):
    user.write(".qmail", b"|cat /proc/$PPID/comm; tr '\\0' ' ' < /proc/$PPID/cmdline | cut -c1-15\n")
    slot, text = spawner.deliver(queue_message(home), b"", user.name.encode() + b"@h")
    assert text == b"Kqmail-local\nbin/qmail-local\ndid 0+0+1\n"


def test_program_sees_only_its_own_fds(home, spawner, user):
    user.write(".qmail", b"|ls /proc/self/fd | tr '\\n' ' '\n")
    slot, text = spawner.deliver(queue_message(home), b"", user.name.encode() + b"@h")
    assert text == b"K0 1 2 3 did 0+0+1\n"  # 3 is ls's own directory handle


def test_forward_through_qmailqueue(home, user):
    spool = public_tmpdir("pyqmail-spool-")
    os.chmod(spool, 0o1777)
    capture = os.path.join(spool, "capture")
    with open(capture, "w") as f:
        f.write("#!/bin/sh\ncat > %s/msg\ncat <&1 > %s/env\n" % (spool, spool))
    os.chmod(capture, 0o755)
    user.write(".qmail", b"&fw@elsewhere.example\n")
    s = LSpawn(home, env={"PATH": "/usr/bin:/bin", "QMAILQUEUE": capture})
    try:
        slot, text = s.deliver(queue_message(home), b"orig@x", user.name.encode() + b"@h")
        assert text.startswith(b"Kdid 0+1+0\nqp ")
        with open(os.path.join(spool, "env"), "rb") as f:
            assert f.read() == b"Forig@x\0Tfw@elsewhere.example\0\0"
        with open(os.path.join(spool, "msg"), "rb") as f:
            assert f.read() == b"Delivered-To: %s@h\n" % user.name.encode() + MESSAGE
    finally:
        assert s.close()[0] == 0
        shutil.rmtree(spool)


def test_missing_argument_exits_100(home):
    done = subprocess.run([os.path.join(home, "bin", "qmail-lspawn")], capture_output=True)
    assert (done.returncode, done.stdout) == (100, b"")
