"""qmail-popup, checkpassword and qmail-pop3d as installed, alone and under the
real tcpserver (ucspi-tcp) on loopback, for a real user with a password, talked
to by Python's poplib and by fetchmail (spec/pop3.md)."""
import os
import poplib
import random
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import PYTHON, need_root, wait_for
from localusers import Users

HOST = b"pop.example.com"
PASSWORD = "Pop3.Secret-pw"
GREETING_RE = re.compile(rb"\+OK <(\d+)\.(\d+)@pop\.example\.com>\r\n")

MESSAGES = [
    # (subdirectory, name, bytes): oldest first
    ("cur", "1000000001.11.host:2,S", b"Return-Path: <a@example.org>\nSubject: seen\n\nold one\n"),
    ("new", "1000000002.12.host", b"Return-Path: <b@example.org>\nSubject: dots\n\n"
                                  b".leading dot\n..two\n.\nend\n"),
    ("new", "1000000003.13.host", b"Subject: crs\r\n\r\nbody with CR LF\r\nand no final newline"),
]


class Pop:
    """A user with a password and a Maildir, and tcpserver running qmail-popup."""

    def __init__(self, home):
        self.home = home
        self.users = Users()
        self.user = self.users.make("pop")
        subprocess.run(["chpasswd"], input=("%s:%s\n" % (self.user.name, PASSWORD)).encode(),
                       check=True)
        self.maildir = self.user.maildir()
        self.server = None
        self.port = None

    def bin(self, name):
        return os.path.join(self.home, "bin", name)

    def argv(self):
        return [self.bin("qmail-popup"), HOST.decode(), self.bin("checkpassword"),
                self.bin("qmail-pop3d"), "Maildir"]

    def add(self, sub, name, data, age=3600):
        path = self.user.write(os.path.join("Maildir", sub, name), data)
        then = time.time() - age
        os.utime(path, (then, then))
        return path

    def add_all(self):
        for i, (sub, name, data) in enumerate(MESSAGES):
            self.add(sub, name, data, age=3600 - i)

    def files(self):
        return {sub: sorted(os.listdir(os.path.join(self.maildir, sub)))
                for sub in ("new", "cur", "tmp")}

    def start(self):
        """The real tcpserver on a free loopback port in 28000-28999."""
        ports = list(range(28000, 29000))
        random.shuffle(ports)
        for port in ports[:20]:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            self.server = subprocess.Popen(["tcpserver", "-RHl0", "127.0.0.1", str(port)]
                                           + self.argv(), stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.port = port

            def up():
                if self.server.poll() is not None:
                    return True
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    return True
                except OSError:
                    return False
            wait_for(up)
            if self.server.poll() is None:
                return port
            self.server.stderr.close()
        pytest.fail("no free port for tcpserver")

    def stop(self):
        if self.server is not None:
            # the sessions end by themselves once their clients are gone (a
            # failed test may leave one waiting): the user can only be removed
            # when nothing runs as it
            deadline = time.monotonic() + 10
            while proc_children(self.server.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            for popup in proc_children(self.server.pid):
                for pid in proc_children(popup) + [popup]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            self.server.terminate()
            self.server.wait(10)
            self.server.stderr.close()
            self.server = None
        self.users.cleanup()

    def poplib(self):
        return poplib.POP3("127.0.0.1", self.port, timeout=20)

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=20)


@pytest.fixture
def pop(qmail_home):
    need_root()
    p = Pop(qmail_home)
    p.add_all()
    p.start()
    yield p
    p.stop()


def talk(s, data, expect_end):
    """Send data, read until the output ends with expect_end (or EOF)."""
    s.sendall(data)
    out = b""
    while not out.endswith(expect_end):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def read_until_closed(s):
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


# ---- under tcpserver, with poplib

def test_poplib_session(pop):
    client = pop.poplib()
    welcome = client.getwelcome()
    m = GREETING_RE.fullmatch(welcome + b"\r\n")
    assert m, welcome
    assert abs(int(m.group(2)) - time.time()) < 30
    assert client.user(pop.user.name) == b"+OK "
    assert client.pass_(PASSWORD) == b"+OK "
    sizes = [len(data) for _, _, data in MESSAGES]
    assert client.stat() == (3, sum(sizes))
    assert client.list() == (b"+OK ", [b"%d %d" % (i + 1, n) for i, n in enumerate(sizes)],
                             sum(len(b"%d %d" % (i + 1, n)) + 2 for i, n in enumerate(sizes)))
    assert client.uidl()[1] == [b"1 1000000001.11.host", b"2 1000000002.12.host",
                                b"3 1000000003.13.host"]
    assert client.uidl(2) == b"+OK 2 1000000002.12.host"
    # poplib undoes the dot-stuffing and splits at CR LF: each message comes
    # back line for line, plus qmail-pop3d's extra empty line
    for i, (_, _, data) in enumerate(MESSAGES):
        lines = client.retr(i + 1)[1]
        assert lines[:-1] == (data[:-1] if data.endswith(b"\n") else data).split(b"\n")
        assert lines[-1] == b""
    assert client.top(2, 1)[1] == [b"Return-Path: <b@example.org>", b"Subject: dots", b"",
                                   b".leading dot", b""]
    assert client.dele(2) == b"+OK "
    assert client.stat() == (3, sizes[0] + sizes[2])
    assert client._shortcmd("LAST") == b"+OK 2"
    with pytest.raises(poplib.error_proto, match="already deleted"):
        client.retr(2)
    assert client.quit() == b"+OK "
    assert pop.files() == {"new": [], "tmp": [],
                           "cur": ["1000000001.11.host:2,S", "1000000003.13.host:2,"]}


def test_wire_bytes(pop):
    with pop.connect() as s:
        greeting = talk(s, b"", b"\r\n")
        assert GREETING_RE.fullmatch(greeting)
        out = talk(s, b"CAPA\r\nUSER %s\r\nPASS %s\r\n" % (pop.user.name.encode(), PASSWORD.encode()),
                   b"+OK \r\n+OK \r\n")
        assert out == b"-ERR authorization first\r\n+OK \r\n+OK \r\n"
        out = talk(s, b"RETR 2\r\nTOP 3 0\r\nCAPA\r\n", b"-ERR unimplemented\r\n")
        assert out == (b"+OK \r\nReturn-Path: <b@example.org>\r\nSubject: dots\r\n\r\n"
                       b"..leading dot\r\n...two\r\n..\r\nend\r\n\r\n.\r\n"
                       # a CR line is not the empty line that ends the header:
                       # TOP 3 0 sends everything, CRs as they are
                       b"+OK \r\nSubject: crs\r\r\n\r\r\nbody with CR LF\r\r\n"
                       b"and no final newline\r\n\r\n.\r\n"
                       b"-ERR unimplemented\r\n")
        out = talk(s, b"DELE 1\r\nQUIT\r\n", b"+OK \r\n+OK \r\n")
        assert out == b"+OK \r\n+OK \r\n"
        assert read_until_closed(s) == b""
    assert pop.files() == {"new": [], "tmp": [],
                           "cur": ["1000000002.12.host:2,", "1000000003.13.host:2,"]}


@pytest.mark.parametrize("user,password", [("own", "wrong"), ("pqnosuchuser", PASSWORD),
                                           ("own", "")])
def test_bad_login_gets_authorization_failed(pop, user, password):
    client = pop.poplib()
    client.user(pop.user.name if user == "own" else user)
    if password == "":
        with pytest.raises(poplib.error_proto, match="-ERR syntax error"):
            client._shortcmd("PASS")
        return
    with pytest.raises(poplib.error_proto) as e:
        client.pass_(password)
    assert e.value.args[0] == b"-ERR authorization failed"
    # one attempt per connection: qmail-popup has closed it
    assert client.sock.recv(100) == b""
    client.close()
    assert pop.files()["new"] == ["1000000002.12.host", "1000000003.13.host"]


def test_apop_fails_with_checkpassword(pop):
    with pop.connect() as s:
        talk(s, b"", b"\r\n")
        assert talk(s, b"APOP %s c4c9334bac560ecc979e58001b3e22fb\r\n" % pop.user.name.encode(),
                    b"\r\n") == b"-ERR authorization failed\r\n"
        assert read_until_closed(s) == b""


def proc_children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rfind(b")") + 2:].split()[1]) == pid:
            out.append(int(entry))
    return out


def proc_info(pid):
    with open("/proc/%d/comm" % pid, "rb") as f:
        comm = f.read().strip()
    with open("/proc/%d/status" % pid, "rb") as f:
        status = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
    uids = [int(x) for x in status[b"Uid"].split()]
    gids = [int(x) for x in status[b"Gid"].split()]
    groups = [int(x) for x in status[b"Groups"].split()]
    return comm, uids, gids, groups, os.readlink("/proc/%d/cwd" % pid)


def test_pop3d_runs_as_the_user_in_the_maildir(pop):
    with pop.connect() as s:
        talk(s, b"", b"\r\n")
        talk(s, b"USER %s\r\nPASS %s\r\n" % (pop.user.name.encode(), PASSWORD.encode()),
             b"+OK \r\n+OK \r\n")
        assert talk(s, b"NOOP\r\n", b"\r\n") == b"+OK \r\n"
        (popup,) = proc_children(pop.server.pid)
        assert proc_info(popup)[:2] == (b"qmail-popup", [0, 0, 0, 0])
        (pop3d,) = proc_children(popup)
        comm, uids, gids, groups, cwd = proc_info(pop3d)
        assert comm == b"qmail-pop3d"
        assert uids == [pop.user.uid] * 4 and gids == [pop.user.gid] * 4
        assert groups == [pop.user.gid]
        assert cwd == pop.maildir
        with open("/proc/%d/environ" % pop3d, "rb") as f:
            env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
        assert (env[b"USER"], env[b"HOME"], env[b"SHELL"]) == (
            pop.user.name.encode(), pop.user.home.encode(), b"/bin/sh")
        talk(s, b"QUIT\r\n", b"+OK \r\n")


def test_dropped_connection_deletes_nothing(pop):
    with pop.connect() as s:
        talk(s, b"", b"\r\n")
        talk(s, b"USER %s\r\nPASS %s\r\n" % (pop.user.name.encode(), PASSWORD.encode()),
             b"+OK \r\n+OK \r\n")
        assert talk(s, b"DELE 1\r\nDELE 2\r\nRETR 3\r\n", b"\r\n.\r\n").startswith(
            b"+OK \r\n+OK \r\n+OK \r\n")
    wait_for(lambda: not proc_children(pop.server.pid))
    assert pop.files() == {"new": ["1000000002.12.host", "1000000003.13.host"], "tmp": [],
                           "cur": ["1000000001.11.host:2,S"]}


def test_fetchmail_retrieves_byte_exact_and_deletes(pop, tmp_path):
    pop.add("new", "1000000004.14.host", b"Subject: big\n\n" + b"".join(
        b".%d line of text\n" % i for i in range(20000)), age=3000)
    out = tmp_path / "out"
    out.mkdir()
    mda = tmp_path / "mda"
    mda.write_text('#!/bin/sh\nn=$(ls %s | wc -l)\nexec cat > %s/msg.$n\n' % (out, out))
    mda.chmod(0o755)
    rc = tmp_path / "fetchmailrc"
    rc.write_text('set no syslog\nset invisible\n'
                  'poll 127.0.0.1 service %d protocol pop3 auth password timeout 30\n'
                  '  user "%s" there with password "%s" is "root" here\n'
                  '  options fetchall sslproto "" mda "%s"\n'
                  % (pop.port, pop.user.name, PASSWORD, mda))
    rc.chmod(0o600)
    done = subprocess.run(["fetchmail", "--nodetach", "-f", str(rc)], capture_output=True,
                          timeout=120, env={"HOME": str(tmp_path), "PATH": os.environ["PATH"],
                                            "FETCHMAILHOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    got = [(out / ("msg.%d" % i)).read_bytes() for i in range(len(os.listdir(out)))]
    sent = [data for _, _, data in MESSAGES]
    sent.append(b"Subject: big\n\n" + b"".join(b".%d line of text\n" % i for i in range(20000)))
    # fetchmail turns CR LF into LF and undoes the dot-stuffing; every message
    # ends in qmail-pop3d's extra empty line
    expected = [data.replace(b"\r\n", b"\n") + (b"\n" if data.endswith(b"\n") else b"\n\n")
                for data in sent]
    assert got == expected
    assert pop.files() == {"new": [], "cur": [], "tmp": []}


# ---- the programs alone

def run_as(user, argv, data=b"", cwd=None):
    return subprocess.run(argv, input=data, capture_output=True, user=user.uid, group=user.gid,
                          extra_groups=[], cwd=cwd or user.home, timeout=30)


def test_popup_usage_quit_and_eof(qmail_home):
    popup = os.path.join(qmail_home, "bin", "qmail-popup")
    done = subprocess.run([popup, "host"], capture_output=True)
    assert (done.returncode, done.stdout) == (1, b"-ERR usage: popup hostname subprogram\r\n")
    done = subprocess.run([popup, "pop.example.com", "/bin/false"], input=b"NOOP\r\nQUIT\r\nNOOP\r\n",
                          capture_output=True)
    m = GREETING_RE.match(done.stdout)
    assert int(m.group(1)) > 1 and done.stdout[m.end():] == b"+OK \r\n+OK \r\n"
    assert (done.returncode, done.stderr) == (1, b"")
    done = subprocess.run([popup, "pop.example.com", "/bin/false"], input=b"USER x\r\n",
                          capture_output=True)
    assert done.stdout[m.end():] == b"+OK \r\n" and done.returncode == 1


def test_popup_hands_the_login_on_fd_3(qmail_home, tmp_path):
    popup = os.path.join(qmail_home, "bin", "qmail-popup")
    saved = tmp_path / "fd3"
    prog = tmp_path / "prog"
    sigign = tmp_path / "sigign"
    environ = tmp_path / "environ"
    prog.write_text("#!/bin/sh\ncat <&3 > %s\necho \"$1 $2\" >&2\nprintf '+OK child\\r\\n'\n"
                    "grep ^SigIgn: /proc/$$/status > %s\nenv > %s\nexit ${EXIT:-0}\n"
                    % (saved, sigign, environ))
    prog.chmod(0o755)
    done = subprocess.run([popup, "pop.example.com", str(prog), "a1", "a2"],
                          input=b"USER joe\r\nPASS pw with  spaces\r\nSTAT\r\n",
                          capture_output=True)
    m = GREETING_RE.match(done.stdout)
    assert done.stdout[m.end():] == b"+OK \r\n+OK child\r\n"
    assert done.returncode == 1
    # notqmail 1.08: the subprogram's stderr is popup's, not the client's
    assert done.stderr == b"a1 a2\n"
    assert saved.read_bytes() == b"joe\0pw with  spaces\0<%s.%s@pop.example.com>\0" % (
        m.group(1), m.group(2))
    # sig_pipedefault(): the subprogram does not inherit Python's ignored SIGPIPE
    assert int(sigign.read_text().split()[1], 16) & (1 << 12) == 0
    done = subprocess.run([popup, "pop.example.com", str(prog)], env={"EXIT": "7"},
                          input=b"APOP joe digest\r\n", capture_output=True)
    assert done.stdout.endswith(b"+OK child\r\n-ERR authorization failed\r\n")
    assert saved.read_bytes().startswith(b"joe\0digest\0<")
    # popup's own environment, not the locale its interpreter coerced (PEP 538)
    assert sorted(environ.read_bytes().split()) == [b"EXIT=7", b"PWD=" + str(os.getcwd()).encode()]
    prog.write_text("#!/bin/sh\nkill -SEGV $$\n")
    done = subprocess.run([popup, "pop.example.com", str(prog)],
                          input=b"USER joe\r\nPASS x\r\n", capture_output=True)
    assert done.stdout.endswith(b"+OK \r\n-ERR aack, child crashed\r\n")
    done = subprocess.run([popup, "pop.example.com", str(tmp_path / "missing")],
                          input=b"USER joe\r\nPASS x\r\n", capture_output=True)
    # the child exits 1 when exec fails; whether before or after popup wrote
    # the pipe decides the reply, as in qmail
    assert done.stdout.endswith((b"+OK \r\n-ERR authorization failed\r\n",
                                 b"+OK \r\n-ERR unable to write pipe\r\n"))
    assert done.returncode == 1 and b"Traceback" not in done.stderr


@pytest.fixture
def account(qmail_home):
    need_root()
    users = Users()
    user = users.make("cpw")
    subprocess.run(["chpasswd"], input=("%s:%s\n" % (user.name, PASSWORD)).encode(), check=True)
    yield user
    users.cleanup()


def checkpassword(home, data, argv, env=None):
    """bin/checkpassword with data on its fd 3."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    try:
        return subprocess.run([os.path.join(home, "bin", "checkpassword")] + argv, cwd="/",
                              pass_fds=(3,), preexec_fn=lambda: os.dup2(r, 3),
                              capture_output=True, env=env, timeout=30)
    finally:
        os.close(r)


def test_checkpassword(qmail_home, account):
    show = ["/bin/sh", "-c", 'echo $(id -u) $(id -g) "[$(id -G | tr " " ,)]" "$(pwd)" "$USER" "$HOME" '
            '"$SHELL" "$KEPT" "${LC_CTYPE-unset}"']
    login = account.name.encode()
    done = checkpassword(qmail_home, login + b"\0" + PASSWORD.encode() + b"\0<1.2@x>\0", show,
                         env={"KEPT": "yes", "USER": "root", "PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == [
        str(account.uid), str(account.gid), "[%d]" % account.gid, account.home,
        account.name, account.home, "/bin/sh", "yes", "unset"]
    # the exit status is the program's
    done = checkpassword(qmail_home, login + b"\0" + PASSWORD.encode() + b"\0", ["sh", "-c", "exit 9"])
    assert done.returncode == 9
    for data, argv, code in (
            (login + b"\0wrong\0ts\0", ["true"], 1),          # bad password
            (b"pqnosuchuser\0" + PASSWORD.encode() + b"\0\0", ["true"], 1),
            (b"root\0\0\0", ["true"], 1),                      # empty password
            (login + b"\0" + PASSWORD.encode(), ["true"], 2),  # unterminated
            (b"", ["true"], 2),
            (login + b"\0" + PASSWORD.encode() + b"\0", [], 2),   # no program
            (login + b"\0" + b"x" * 600 + b"\0\0", ["true"], 1),  # over 512 bytes
            (login + b"\0" + PASSWORD.encode() + b"\0", ["/nonexistent/prog"], 111)):
        done = checkpassword(qmail_home, data, argv)
        assert (done.returncode, done.stdout, done.stderr) == (code, b"", b""), data
    # a home it cannot enter is a temporary failure
    os.chmod(account.home, 0o700)
    os.chown(account.home, 0, 0)
    done = checkpassword(qmail_home, login + b"\0" + PASSWORD.encode() + b"\0", ["true"])
    assert done.returncode == 111


def test_checkpassword_without_shadow_entry_uses_passwd(monkeypatch):
    """checkpassword 0.90: with no shadow entry the hash is /etc/passwd's own
    field (spec/pop3.md §3: it checks /etc/passwd + shadow)."""
    import pwd
    from pyqmail import checkpassword as cp
    name = "pqnoshadow%d" % (os.getpid() % 100000)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)            # no such user, so no shadow entry either
    stored = cp.crypt(b"secret", b"$6$saltsalt$")
    fake = pwd.struct_passwd((name, stored.decode(), 4242, 4242, "", "/nonexistent", "/bin/sh"))
    real = pwd.getpwnam
    monkeypatch.setattr(cp.pwd, "getpwnam", lambda n: fake if n == name else real(n))
    assert cp.check(name.encode(), b"secret") is fake
    with pytest.raises(cp.Failure) as failure:
        cp.check(name.encode(), b"wrong")
    assert failure.value.code == 1


def test_pop3d_alone(qmail_home, account):
    pop3d = os.path.join(qmail_home, "bin", "qmail-pop3d")
    done = subprocess.run([pop3d, "Maildir"], capture_output=True)
    assert (done.returncode, done.stdout, done.stderr) == (
        1, b"", b"qmail-pop3d invoked as uid 0, terminating\n")
    for argv in ([pop3d], [pop3d, "Maildir"]):
        done = run_as(account, argv, b"STAT\r\n")
        assert (done.returncode, done.stdout) == (0, b"-ERR this user has no $HOME/Maildir\r\n")
    account.maildir()
    os.chmod(os.path.join(account.home, "Maildir", "cur"), 0)
    done = run_as(account, [pop3d, "Maildir"], b"STAT\r\n")
    assert (done.returncode, done.stdout) == (0, b"-ERR unable to scan $HOME/Maildir\r\n")
    os.chmod(os.path.join(account.home, "Maildir", "cur"), 0o700)
    now = time.time()
    for sub, name, data, age in (("new", "old", b"a\n", 100), ("new", "now", b"bb\n", -5),
                                 ("cur", ".hidden", b"c\n", 100), ("tmp", "stale", b"d\n", 0),
                                 ("tmp", "fresh", b"e\n", 0)):
        path = account.write(os.path.join("Maildir", sub, name), data)
        os.utime(path, (now - age, now - age))
    stale = os.path.join(account.home, "Maildir", "tmp", "stale")
    os.utime(stale, (now - 129700, now))
    # maildir_clean() skips dot files, however old (spec/pop3.md §4 step 1)
    dot = account.write(os.path.join("Maildir", "tmp", ".keep"), b"f\n")
    os.utime(dot, (now - 129700, now))
    # the message from the current second waits for the next session; tmp/
    # loses what nobody accessed for 36 hours
    done = run_as(account, [pop3d, "Maildir"], b"STAT\r\nUIDL\r\nQUIT\r\n")
    assert done.stdout == b"+OK \r\n+OK 1 2\r\n+OK \r\n1 old\r\n.\r\n+OK \r\n"
    assert done.returncode == 0
    assert sorted(os.listdir(os.path.join(account.home, "Maildir", "tmp"))) == [".keep", "fresh"]
    assert sorted(os.listdir(os.path.join(account.home, "Maildir", "cur"))) == [".hidden", "old:2,"]


def test_tmp_cleaning_counts_whole_seconds(tmp_path, monkeypatch):
    """maildir_clean(): now > atime + 129600 in whole seconds, as time_t
    compares; dot files are never removed."""
    from pyqmail import maildir
    (tmp_path / "tmp").mkdir()
    for name in ("edge", "old", ".old"):
        (tmp_path / "tmp" / name).write_bytes(b"x")
    base = 1700000000
    os.utime(tmp_path / "tmp" / "edge", (base + 0.9, base))
    os.utime(tmp_path / "tmp" / "old", (base - 1, base))
    os.utime(tmp_path / "tmp" / ".old", (base - 1, base))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(maildir.time, "time", lambda: base + 129600 + 0.95)
    maildir.clean_tmp()
    assert sorted(os.listdir(tmp_path / "tmp")) == [".old", "edge"]


def test_imports_and_start_time(qmail_home):
    """Exec'd once per connection: only small modules, and a quick start."""
    lib = os.path.join(qmail_home, "lib", "python")
    for module in ("qmail_popup", "qmail_pop3d"):
        code = ("import sys; sys.path.insert(0, %r); import pyqmail.%s; "
                "print(' '.join(sorted(sys.modules)))" % (lib, module))
        names = subprocess.run([PYTHON, "-I", "-S", "-c", code], capture_output=True,
                               check=True).stdout.decode().split()
        for heavy in ("socket", "re", "logging", "email", "dns", "argparse", "typing",
                      "dataclasses", "subprocess", "ctypes", "enum", "signal"):
            assert heavy not in names, (module, heavy)

    def best(argv, data):
        times = []
        for _ in range(5):
            start = time.monotonic()
            subprocess.run(argv, input=data, capture_output=True, check=False)
            times.append(time.monotonic() - start)
        return min(times)
    bare = best([PYTHON, "-I", "-S", "-c", "pass"], b"")
    popup = best([os.path.join(qmail_home, "bin", "qmail-popup"), "h", "true"], b"QUIT\r\n")
    assert popup < bare + 0.1
