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
from localusers import Users, processes_of
from pyqmail import cdb, qmail_lspawn

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


@pytest.mark.parametrize("data", [b"not a cdb", b"\xff" * 2048])
def test_unreadable_users_cdb(home, spawner, data):
    """A truncated users/cdb, or one whose pointers lead outside it."""
    with open(os.path.join(home, "users", "cdb"), "wb") as f:
        f.write(data)
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


def test_a_resident_delivers_one_message_after_another(home, spawner, user):
    """Deliveries to one user go to one resident qmail-local in turn: the
    program's parent is the same process each time, and its maildir messages
    are named TIME.PID.HOST, then TIME.PID_2.HOST, TIME.PID_3.HOST."""
    user.maildir()
    user.write(".qmail", b"./Maildir/\n|echo $PPID $(id -u):$(id -g)\n")
    texts = [spawner.deliver(queue_message(home), b"a@b", user.name.encode() + b"@h", slot=s)[1]
             for s in range(3)]
    pid = texts[0].split()[0][1:]
    assert texts == [b"K%s %d:%d\ndid 1+0+1\n" % (pid, user.uid, user.gid)] * 3
    names = sorted(os.listdir(os.path.join(user.home, "Maildir", "new")),
                   key=lambda n: (len(n.split(".")[1]), n.split(".")[1]))
    assert [n.split(".")[1] for n in names] == [pid.decode(), "%s_2" % pid.decode(),
                                               "%s_3" % pid.decode()]
    for name in names:
        with open(os.path.join(user.home, "Maildir", "new", name), "rb") as f:
            assert f.read() == (b"Return-Path: <a@b>\nDelivered-To: %s@h\n" % user.name.encode()
                                + MESSAGE)


def test_each_user_has_residents_of_its_own(home, spawner, accounts):
    one, two = accounts.make("ra"), accounts.make("rb")
    for who in (one, two):
        who.write(".qmail", b"|echo $PPID $(id -u) $(id -G)\n")
    first = spawner.deliver(queue_message(home), b"", one.name.encode() + b"@h")[1].split()
    second = spawner.deliver(queue_message(home), b"", two.name.encode() + b"@h")[1].split()
    assert first[1:] == [b"%d" % one.uid, b"%d" % one.gid, b"did", b"0+0+1"]
    assert second[1:] == [b"%d" % two.uid, b"%d" % two.gid, b"did", b"0+0+1"]
    assert first[0] != second[0]


def test_nothing_of_one_delivery_is_left_for_the_next(home, spawner, user):
    """The environment, working directory, umask and descriptors of a delivery
    are its own, also when its resident made others before."""
    user.write(".qmail-default", b"|echo $DEFAULT; cd /tmp; umask 022\n")
    user.write(".qmail", b"|echo ${DEFAULT-unset} [$EXT] $(pwd) $(umask); ls /proc/self/fd | tr '\\n' ' '\n")
    name = user.name.encode()
    assert spawner.deliver(queue_message(home), b"", name + b"-x@h") == (0, b"Kx\ndid 0+0+1\n")
    assert spawner.deliver(queue_message(home), b"", name + b"@h") == (
        0, b"Kunset [] %s 0077\n0 1 2 3 did 0+0+1\n" % user.home.encode())


def test_a_resident_serves_at_most_max_use_deliveries(home, spawner, user):
    user.write(".qmail", b"|echo $PPID\n")
    messid = queue_message(home)
    parents = [spawner.deliver(messid, b"", user.name.encode() + b"@h")[1].split()[0]
               for _ in range(qmail_lspawn.MAX_USE + 1)]
    assert len(set(parents[:-1])) == 1 and parents[-1] != parents[0]


def test_a_resident_killed_mid_delivery(home, spawner, user):
    """A resident that dies is a crashed qmail-local (a temporary failure), and
    the user's next delivery gets a new one."""
    user.write(".qmail-die", b"|kill -9 $PPID\n")
    user.write(".qmail", b"|echo ok\n")
    name = user.name.encode()
    assert spawner.deliver(queue_message(home), b"", name + b"-die@h") == (0, b"Zqmail-local crashed.\n")
    assert spawner.deliver(queue_message(home), b"", name + b"@h") == (0, b"Kok\ndid 0+0+1\n")


def test_residents_end_before_qmail_lspawn_does(home, spawner, user):
    user.write(".qmail", b"|true\n")
    spawner.deliver(queue_message(home), b"", user.name.encode() + b"@h")
    assert len(processes_of(user.uid)) == 1   # the idle resident
    assert spawner.close() == (0, b"")
    assert processes_of(user.uid) == []


def test_an_idle_resident_ends_after_idle_seconds(home, spawner, user):
    user.write(".qmail", b"|true\n")
    spawner.deliver(queue_message(home), b"", user.name.encode() + b"@h")
    done = time.monotonic()
    assert len(processes_of(user.uid)) == 1
    while processes_of(user.uid) and time.monotonic() < done + qmail_lspawn.IDLE_SECONDS + 5:
        time.sleep(0.05)
    assert processes_of(user.uid) == []
    assert time.monotonic() - done >= qmail_lspawn.IDLE_SECONDS - 0.5
    assert spawner.proc.poll() is None


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
