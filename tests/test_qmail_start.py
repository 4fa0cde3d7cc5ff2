"""The whole qmail-start tree under the real uids: queue with qmail-queue, see it
in a Maildir, read qmail-send's log, check the processes in /proc."""
import grp
import os
import pathlib
import re
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import public_tmpdir, uid, wait_for
from localusers import Users
from pyqmail import prot


class Tree:
    """qmail-start ./Maildir/ (or another default delivery) with the log on a pipe we read."""

    def __init__(self, home: str, *args: str, default: str = "./Maildir/"):
        self.home = home
        env = {"PATH": f"{home}/bin:/usr/bin:/bin"}
        self.proc = subprocess.Popen([os.path.join(home, "bin", "qmail-start"), default, *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, cwd="/")
        self.log = b""
        # drain the log all the time: qmail-send blocks when its log pipe is full
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self):
        fd = self.proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.log += data

    def read_log(self):
        return self.log

    def wait_log(self, pattern: bytes, timeout=20.0):
        wait_for(lambda: re.search(pattern, self.read_log(), re.M), timeout)
        return self.log

    def children(self) -> dict[str, list[int]]:
        """comm -> pids of every process below qmail-send."""
        out = {}
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                with open(f"/proc/{pid}/comm") as f:
                    out.setdefault(f.read().strip(), []).append(pid)
            except OSError:
                continue
            todo += kids
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(30)
        self.proc.stdout.close()


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)


def queue_as(home, user, message: bytes, envelope: bytes) -> int:
    r, w = os.pipe()
    os.write(w, envelope)
    os.close(w)
    done = subprocess.run([os.path.join(home, "bin", "qmail-queue")], input=message, stdout=r,
                          preexec_fn=lambda: prot.drop(uid(user), grp.getgrnam("nogroup").gr_gid))
    os.close(r)
    return done.returncode


@pytest.fixture
def users():
    """Taken before `tree` by the tests that use both, so the tree stops first:
    an idle resident qmail-local ends with its qmail-lspawn, and only then are
    the accounts removed (left to its 10 s idle timeout, it raced cleanup's
    wait of the same length)."""
    u = Users()
    yield u
    u.cleanup()


@pytest.fixture
def tree(fresh_home):
    subprocess.run([os.path.join(fresh_home, "bin", "config-fast"), "host.example.com"],
                   check=True, capture_output=True)
    t = Tree(fresh_home)
    yield t
    t.stop()


def test_message_reaches_maildir_with_exact_log(users, tree):
    joe = users.make("joe")
    joe.maildir()
    tree.wait_log(rb"^status: local 0/10 remote 0/20$")
    wait_for(lambda: os.path.exists(os.path.join(tree.home, "queue/lock/qmail-queued")))
    assert queue_as(tree.home, "nobody", b"Subject: hello\n\nbody\n",
                    b"Fsender@example.org\0T%s@host.example.com\0\0" % joe.name.encode()) == 0
    new = os.path.join(joe.home, "Maildir", "new")
    wait_for(lambda: os.listdir(new))
    (name,) = os.listdir(new)
    with open(os.path.join(new, name), "rb") as f:
        data = f.read()
    assert data.startswith(b"Return-Path: <sender@example.org>\nDelivered-To: %s@host.example.com\n"
                           b"Received: (qmail " % joe.name.encode())
    assert data.endswith(b"Subject: hello\n\nbody\n")
    log = tree.wait_log(rb"^end msg \d+$").decode()
    ident = re.search(r"^new msg (\d+)$", log, re.M).group(1)
    expect = [f"new msg {ident}",
              rf"info msg {ident}: bytes \d+ from <sender@example.org> qp \d+ uid {uid('nobody')}",
              rf"starting delivery 1: msg {ident} to local {joe.name}@host.example.com",
              "status: local 1/10 remote 0/20",
              r"delivery 1: success: did_1\+0\+0/",
              "status: local 0/10 remote 0/20",
              f"end msg {ident}"]
    lines = log.split("\n")[1:8]
    for pattern, line in zip(expect, lines):
        assert re.fullmatch(pattern, line), (pattern, line)


def test_processes_uids_groups_fds(tree):
    tree.wait_log(rb"^status: local 0/10")
    wait_for(lambda: {"qmail-lspawn", "qmail-rspawn", "qmail-clean", "qmail-queued"}
             <= set(tree.children()))
    kids = tree.children()
    qmail_gid = str(grp.getgrnam("qmail").gr_gid)
    expect = {"qmail-send": "qmails", "qmail-lspawn": "root", "qmail-rspawn": "qmailr",
              "qmail-clean": "qmailq", "qmail-queued": "qmailq"}
    for comm, user in expect.items():
        for pid in kids[comm]:
            st = status(pid)
            assert st["Uid"].split() == [str(uid(user))] * 4, comm
            assert st["Gid"].split() == [qmail_gid] * 4, comm
            assert st["Groups"].split() == [qmail_gid], comm
    (send,) = kids["qmail-send"]
    assert send == tree.proc.pid

    def links(pid):
        return {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    send_fds = links(send)
    assert all(send_fds[fd].startswith("pipe:") for fd in range(7))
    # each helper holds its own two pipe ends and none of qmail-send's others
    for comm, ours in (("qmail-lspawn", (1, 2)), ("qmail-rspawn", (3, 4)), ("qmail-clean", (5, 6))):
        (pid,) = kids[comm]
        fds = links(pid)
        assert (fds[0], fds[1]) == (send_fds[ours[0]], send_fds[ours[1]]), comm
        others = {send_fds[fd] for fd in range(7)} - {fds[0], fds[1]}
        assert not others & set(v for k, v in fds.items() if k > 1), comm


def test_sigterm_stops_the_whole_tree(tree):
    tree.wait_log(rb"^status: local 0/10")
    wait_for(lambda: "qmail-queued" in tree.children())
    pids = [p for ps in tree.children().values() for p in ps]
    tree.proc.send_signal(signal.SIGTERM)
    assert tree.proc.wait(20) == 0
    tree.wait_log(rb"^status: exiting$")

    def gone():
        return not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().split()[2] != "Z"
                       for p in pids)
    wait_for(gone, 20)


def queue_many(home, count: int, recipient: bytes, tag: bytes = b"") -> None:
    """count messages through one in-process client as nobody (the qmail-smtpd path);
    each body carries its number so duplicates and losses can be counted."""
    from pyqmail import qmail
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            prot.drop(uid("nobody"), grp.getgrnam("nogroup").gr_gid)
            for i in range(count):
                qq = qmail.Qmail(home.encode())
                qq.open()
                qq.put(b"Subject: burst\n\nmessage %s%d\n" % (tag, i))
                qq.from_(b"s@example.org")
                qq.to(recipient)
                if qq.close():
                    os._exit(2)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


def delivered_numbers(maildir: str) -> list[bytes]:
    out = []
    for name in os.listdir(os.path.join(maildir, "new")):
        with open(os.path.join(maildir, "new", name), "rb") as f:
            out.append(re.search(rb"\nmessage (\S+)\n$", f.read()).group(1))
    return out


def test_burst_of_500_stays_within_concurrency(fresh_home, users):
    subprocess.run([os.path.join(fresh_home, "bin", "config-fast"), "host.example.com"],
                   check=True, capture_output=True)
    with open(os.path.join(fresh_home, "control", "concurrencylocal"), "w") as f:
        f.write("4\n")
    joe = users.make("burst")
    maildir = joe.maildir()
    tree = Tree(fresh_home)
    try:
        tree.wait_log(rb"^status: local 0/4 remote 0/20$")
        wait_for(lambda: os.path.exists(os.path.join(fresh_home, "queue/lock/qmail-queued")))
        queue_many(fresh_home, 500, b"%s@host.example.com" % joe.name.encode())
        wait_for(lambda: len(os.listdir(os.path.join(maildir, "new"))) == 500, 120)
        log = tree.wait_log(rb"^status: local 0/4 remote 0/20$").decode()
    finally:
        tree.stop()
    busy = [int(m) for m in re.findall(r"^status: local (\d+)/4 ", log, re.M)]
    assert max(busy) <= 4 and max(busy) >= 2
    assert sorted(delivered_numbers(maildir)) == sorted(b"%d" % i for i in range(500))


@pytest.mark.parametrize("how", ["term", "kill"])
def test_stop_during_burst_loses_nothing(fresh_home, users, how):
    """SIGTERM to qmail-send, or SIGKILL of every process of the tree, in the
    middle of a burst; a new qmail-start delivers everything that was queued."""
    subprocess.run([os.path.join(fresh_home, "bin", "config-fast"), "host.example.com"],
                   check=True, capture_output=True)
    # one delivery at a time: the stop surely comes while most are still queued
    with open(os.path.join(fresh_home, "control", "concurrencylocal"), "w") as f:
        f.write("1\n")
    joe = users.make("crash")
    maildir = joe.maildir()
    rcpt = b"%s@host.example.com" % joe.name.encode()
    tree = Tree(fresh_home)
    try:
        tree.wait_log(rb"^status: local 0/1 ")
        wait_for(lambda: os.path.exists(os.path.join(fresh_home, "queue/lock/qmail-queued")))
        queue_many(fresh_home, 300, rcpt)
        wait_for(lambda: len(os.listdir(os.path.join(maildir, "new"))) >= 20, 60)
        if how == "term":
            tree.proc.send_signal(signal.SIGTERM)
            assert tree.proc.wait(60) == 0
        else:
            for pids in tree.children().values():
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            tree.proc.wait(10)
    finally:
        tree.stop()
    # everything still alive of the old tree is gone before the restart
    wait_for(lambda: not any(open(f"/proc/{p}/cmdline", "rb").read().find(fresh_home.encode()) >= 0
                             for p in os.listdir("/proc") if p.isdigit() and os.path.exists(f"/proc/{p}/cmdline")), 30)
    before = len(os.listdir(os.path.join(maildir, "new")))
    assert before < 300
    tree = Tree(fresh_home)
    try:
        wait_for(lambda: len(set(delivered_numbers(maildir))) == 300, 120)
        wait_for(lambda: not os.listdir(os.path.join(fresh_home, "queue", "todo"))
                 and all(not os.listdir(os.path.join(fresh_home, "queue", "info", str(i))) for i in range(23)), 60)
    finally:
        tree.stop()
    numbers = delivered_numbers(maildir)
    duplicates = len(numbers) - len(set(numbers))
    assert sorted(set(numbers)) == sorted(b"%d" % i for i in range(300))
    # only a delivery in flight at the kill may repeat: at most concurrencylocal
    assert duplicates <= (0 if how == "term" else 1), duplicates


def test_detached_start(fresh_home, users):
    """QMAILSTART_DETACH=1: qmail-start returns at once, the tree runs on as a
    daemon in a session of its own and delivers; the variable reaches no child."""
    subprocess.run([os.path.join(fresh_home, "bin", "config-fast"), "host.example.com"],
                   check=True, capture_output=True)
    joe = users.make("det")
    maildir = joe.maildir()
    joe.write(".qmail", b"|env > ENV; exit 0\n./Maildir/\n", 0o644)
    log = os.path.join(fresh_home, "send.log")
    with open(log, "wb") as out:
        done = subprocess.run([os.path.join(fresh_home, "bin", "qmail-start"), "./Maildir/"],
                              env={"PATH": f"{fresh_home}/bin:/usr/bin:/bin", "QMAILSTART_DETACH": "1"},
                              stdin=subprocess.DEVNULL, stdout=out, timeout=30)
    assert done.returncode == 0
    send_pid = None
    try:
        def find():
            nonlocal send_pid
            for p in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        if f.read() == b"/usr/bin/python3\0-IS\0%s/bin/qmail-send\0" % fresh_home.encode():
                            send_pid = int(p)
                except OSError:
                    pass
            return send_pid
        wait_for(find)
        st = status(send_pid)
        assert st["PPid"].strip() == "1" or int(st["PPid"]) != os.getpid()
        assert os.getsid(send_pid) != os.getsid(0)
        wait_for(lambda: os.path.exists(os.path.join(fresh_home, "queue/lock/qmail-queued")))
        assert queue_as(fresh_home, "nobody", b"Subject: d\n\nx\n",
                        b"Fs@example.org\0T%s@host.example.com\0\0" % joe.name.encode()) == 0
        wait_for(lambda: os.listdir(os.path.join(maildir, "new")))
        with open(os.path.join(joe.home, "ENV"), "rb") as f:
            assert b"QMAILSTART_DETACH" not in f.read()
        wait_for(lambda: b"end msg" in open(log, "rb").read())
    finally:
        if send_pid:
            os.kill(send_pid, signal.SIGTERM)
            wait_for(lambda: not os.path.exists(f"/proc/{send_pid}") or
                     open(f"/proc/{send_pid}/stat").read().split()[2] == "Z", 30)


def test_multilog_as_the_logger(fresh_home, users):
    """`qmail-start ./Maildir/ multilog t DIR`: the logger runs as qmaill and
    stores qmail-send's lines with TAI64N labels."""
    subprocess.run([os.path.join(fresh_home, "bin", "config-fast"), "host.example.com"],
                   check=True, capture_output=True)
    logdir = os.path.join(fresh_home, "log")
    os.mkdir(logdir)
    os.chown(logdir, uid("qmaill"), -1)
    joe = users.make("mlog")
    joe.maildir()
    tree = Tree(fresh_home, "multilog", "t", logdir)
    current = os.path.join(logdir, "current")
    try:
        wait_for(lambda: os.path.exists(current) and b"status: local 0/10" in open(current, "rb").read())
        wait_for(lambda: os.path.exists(os.path.join(fresh_home, "queue/lock/qmail-queued")))
        assert queue_as(fresh_home, "nobody", b"x\n", b"Fs@h\0T%s@host.example.com\0\0" % joe.name.encode()) == 0
        wait_for(lambda: b"end msg" in open(current, "rb").read())
        kids = tree.children()
        assert status(kids["multilog"][0])["Uid"].split()[0] == str(uid("qmaill"))
    finally:
        tree.stop()
    lines = open(current, "rb").read().split(b"\n")
    assert re.fullmatch(rb"@4000[0-9a-f]{20} status: local 0/10 remote 0/20", lines[0])
    assert any(re.fullmatch(rb"@4000[0-9a-f]{20} delivery 1: success: did_1\+0\+0/", x) for x in lines)
    assert tree.log == b""  # nothing on qmail-start's stdout


def test_resident_qmail_getpw(users, tree):
    """qmail-lspawn's resident qmail-getpw: uid qmailp, gid nofiles, named
    qmail-getpw, holding only its socket; deliveries look users up through it."""
    tree.wait_log(rb"^status: local 0/10")
    wait_for(lambda: "qmail-getpw" in tree.children())
    (pid,) = tree.children()["qmail-getpw"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0", 1)[0] == b"qmail-getpw"
    st = status(pid)
    assert st["Uid"].split() == [str(uid("qmailp"))] * 4
    assert st["Gid"].split() == [str(grp.getgrnam("nofiles").gr_gid)] * 4
    assert [os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd")] == [True]
    joe = users.make("gpw")
    joe.maildir()
    joe.write(".qmail-ext", b"./Maildir/\n", 0o644)
    wait_for(lambda: os.path.exists(os.path.join(tree.home, "queue/lock/qmail-queued")))
    assert queue_as(tree.home, "nobody", b"x\n", b"Fs@h\0T%s-Ext@host.example.com\0\0" % joe.name.encode()) == 0
    # found through qmail-getpw: user joe, dash "-", extension "ext"
    wait_for(lambda: os.listdir(os.path.join(joe.home, "Maildir", "new")))
    assert tree.children()["qmail-getpw"] == [pid]   # the same process served it


def test_children_get_the_environment_qmail_start_was_given(fresh_home):
    """The logger, qmail-send and the helpers get qmail-start's own environment,
    as execvp() hands it on: not the locale the interpreter coerced (PEP 538)."""
    base = public_tmpdir("pyqmail-logger-")
    os.chown(base, uid("qmaill"), -1)
    saved = pathlib.Path(base) / "logger.env"
    tree = Tree(fresh_home, "sh", "-c", "env > %s; exec cat > /dev/null" % saved)
    try:
        wait_for(lambda: saved.exists() and b"PATH=" in saved.read_bytes())
        names = ("qmail-send", "qmail-lspawn", "qmail-rspawn", "qmail-clean", "qmail-queued")
        # qmail-start forks the helpers before it execs qmail-send: wait for all
        wait_for(lambda: all(name in tree.children() for name in names))
        kids = tree.children()
        environs = {}
        for name in names:
            with open(f"/proc/{kids[name][0]}/environ", "rb") as f:
                environs[name] = f.read()
        logged = saved.read_bytes()
    finally:
        tree.stop()
        shutil.rmtree(base)
    path = f"PATH={fresh_home}/bin:/usr/bin:/bin".encode()
    assert sorted(logged.split()) == sorted([path, b"PWD=/"])
    for name, data in environs.items():
        assert data == path + b"\0", name
