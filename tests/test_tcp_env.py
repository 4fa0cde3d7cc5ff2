"""tcp-env (spec/admin-tools.md §7): the TCP environment from fd 0, PTR names from
a dnsmasq of the test's own, ident from a loopback identd, and qmail-smtpd
behind the real xinetd."""
import os
import random
import re
import socket
import subprocess
import threading

import pytest

from conftest import need_root, public_tmpdir, uid, wait_for
from pyqmail import tcp_env

DNS_IP = "127.0.0.53"


@pytest.mark.parametrize("argv, parsed", [
    ([b"tcp-env", b"prog", b"-R"], (True, 30, [b"prog", b"-R"])),
    ([b"tcp-env", b"-R", b"prog"], (False, 30, [b"prog"])),
    ([b"tcp-env", b"-Rr", b"prog"], (True, 30, [b"prog"])),
    ([b"tcp-env", b"-t5", b"prog"], (True, 5, [b"prog"])),
    ([b"tcp-env", b"-Rt", b"12x", b"prog"], (False, 12, [b"prog"])),
    ([b"tcp-env", b"-t", b"junk", b"prog"], (True, 0, [b"prog"])),
    ([b"tcp-env", b"-xq", b"--", b"-prog"], (True, 30, [b"-prog"])),
    ([b"tcp-env", b"-R"], (False, 30, [])),
    # subgetopt: any argument starting "--" ends the options and is skipped
    ([b"tcp-env", b"--x", b"-R", b"prog"], (True, 30, [b"-R", b"prog"])),
])
def test_options(argv, parsed):
    assert tcp_env.parse_options(argv) == parsed


@pytest.fixture
def tmp():
    d = public_tmpdir("pyqmail-tcpenv-")
    yield d
    subprocess.run(["rm", "-rf", d])


@pytest.fixture
def dnsmasq(tmp):
    """A resolver of our own: 127.0.0.1 has the PTR Loop.EXAMPLE; no other
    loopback address has one."""
    need_root()
    p = subprocess.Popen(["dnsmasq", "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                          "--bind-interfaces", "--listen-address=" + DNS_IP, "--port=53",
                          "--bogus-priv", "--pid-file=", "--user=root",
                          "--ptr-record=1.0.0.127.in-addr.arpa,Loop.EXAMPLE"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def answering():
        assert p.poll() is None, p.stderr.read()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            # a minimal PTR query for 1.0.0.127.in-addr.arpa
            q = (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"".join(
                bytes([len(x)]) + x for x in b"1.0.0.127.in-addr.arpa".split(b".")) +
                b"\x00\x00\x0c\x00\x01")
            s.sendto(q, (DNS_IP, 53))
            try:
                return s.recv(512)[:2] == b"\x12\x34"
            except OSError:
                return False
    wait_for(answering)
    resolv = os.path.join(tmp, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver %s\noptions timeout:1 attempts:1\n" % DNS_IP)
    yield resolv
    p.terminate()
    p.wait(10)
    p.stderr.close()


def run_tcp_env(home, resolv, args, source="127.0.0.1", env=None, stdin=None):
    """tcp-env ARGS on an accepted loopback connection, in a mount namespace
    where /etc/resolv.conf is ours; (exit code, environment the program saw)."""
    program = os.path.join(home, "bin", "tcp-env")
    wrap = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), source_address=(source, 0)) as client:
            server, _ = listener.accept()
            with server:
                done = subprocess.run(wrap + [program] + args + ["/usr/bin/env"],
                                      stdin=server if stdin is None else stdin,
                                      capture_output=True, env=env or {"PATH": "/usr/bin:/bin"},
                                      timeout=60)
            seen = {}
            for line in done.stdout.split(b"\n"):
                if b"=" in line:
                    k, _, v = line.partition(b"=")
                    seen[k] = v
            return done.returncode, seen, client.getsockname(), listener.getsockname()


def test_environment(qmail_home, dnsmasq):
    code, env, (cip, cport), (lip, lport) = run_tcp_env(
        qmail_home, dnsmasq, ["-R"], env={"PATH": "/usr/bin:/bin", "TCPREMOTEINFO": "forged",
                              "TCPLOCALHOST": "stale"})
    assert code == 0
    assert env[b"PROTO"] == b"TCP"
    assert env[b"TCPLOCALIP"] == b"127.0.0.1" and env[b"TCPLOCALPORT"] == b"%d" % lport
    assert env[b"TCPREMOTEIP"] == b"127.0.0.1" and env[b"TCPREMOTEPORT"] == b"%d" % cport
    assert env[b"TCPLOCALHOST"] == b"loop.example" and env[b"TCPREMOTEHOST"] == b"loop.example"
    assert b"TCPREMOTEINFO" not in env
    # the caller's environment, not the locale the interpreter coerced (PEP 538)
    assert sorted(set(env) - {b"PWD"}) == [b"PATH", b"PROTO", b"TCPLOCALHOST", b"TCPLOCALIP", b"TCPLOCALPORT",
                           b"TCPREMOTEHOST", b"TCPREMOTEIP", b"TCPREMOTEPORT"]
    code, env, _, _ = run_tcp_env(qmail_home, dnsmasq, ["-R"], source="127.0.0.61",
                                  env={"PATH": "/usr/bin:/bin", "TCPREMOTEHOST": "stale"})
    assert code == 0 and env[b"TCPREMOTEIP"] == b"127.0.0.61"
    assert b"TCPREMOTEHOST" not in env


@pytest.mark.parametrize("target, name", [
    ("Loop.EXAMPLE.", b"loop.example"),
    ("a b.Example.", b"a\\032b.example"),
    ("x\\000y.example.", b"x\\000y.example"),
    ("nl\\010.example.", b"nl\\010.example"),
    ('q"(;)@$.x.', b'q\\"\\(\\;\\)\\@\\$.x'),
    ("a\\.b.example.", b"a\\.b.example"),
    ("\\200.example.", b"\\200.example"),
    (".", b"."),
])
def test_ptr_name_as_dn_expand_gives_it(monkeypatch, target, name):
    """qmail's dns_ptr returns dn_expand's text: bytes outside ! to ~ as \\DDD,
    `".;\\()@$` escaped with a backslash; then case_lowers."""
    import dns.name
    import dns.resolver

    class Record:
        def __init__(self, text):
            self.target = dns.name.from_text(text)

    monkeypatch.setattr(dns.resolver, "resolve", lambda *a, **k: [Record(target)])
    assert tcp_env.dns_ptr(b"192.0.2.1") == name


def test_softdnserror(qmail_home, tmp):
    resolv = os.path.join(tmp, "dead-resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.54\noptions timeout:1 attempts:1\n")
    code, env, _, _ = run_tcp_env(qmail_home, resolv, ["-R"])
    assert code == 0
    assert env[b"TCPLOCALHOST"] == b"softdnserror" and env[b"TCPREMOTEHOST"] == b"softdnserror"


def test_proto_tcp_already_set(qmail_home, dnsmasq):
    code, env, _, _ = run_tcp_env(qmail_home, dnsmasq, [], env={"PATH": "/usr/bin:/bin", "PROTO": "TCP",
                                                    "TCPREMOTEIP": "kept"})
    assert code == 0 and env[b"TCPREMOTEIP"] == b"kept" and b"TCPLOCALIP" not in env


def test_failures_exit_111_silently(qmail_home, dnsmasq):
    devnull = open(os.devnull, "rb")
    with devnull:
        code, env, _, _ = run_tcp_env(qmail_home, dnsmasq, ["-R"], stdin=devnull)
    assert (code, env) == (111, {})
    done = subprocess.run([os.path.join(qmail_home, "bin", "tcp-env"), "-R"], capture_output=True)
    assert (done.returncode, done.stdout, done.stderr) == (111, b"", b"")
    code, env, _, _ = run_tcp_env(qmail_home, dnsmasq, ["-R", "/nonexistent/program"])
    assert code == 111


class Identd(threading.Thread):
    """A one-shot RFC 1413 server on ip:113."""

    def __init__(self, ip, reply):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, 113))
        self.sock.listen(1)
        self.sock.settimeout(20)
        self.reply = reply
        self.query = None

    def run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(100)
                if not chunk:
                    break
                data += chunk
            self.query = data
            conn.sendall(self.reply)


@pytest.mark.parametrize("reply, info", [
    (b"%d , %d : USERID : UNIX : j o\te\r\n", b"joe"),
    (b"%d , %d : ERROR : NO-USER\r\n", b""),
    (b"%d , %d : USERID : UNIX : a:b:" + b"x" * 1200 + b"\r\n", b"a:b:" + b"x" * 994),
    (b"%d , %d : USERID : UNIX : cut off", None),
    # env_put2 takes a C string: the value ends at a NUL
    (b"%d , %d : USERID : UNIX : jo\0e\r\n", b"jo"),
])
def test_ident(qmail_home, dnsmasq, reply, info):
    ip = "127.0.0.%d" % random.randrange(70, 250)
    identd = Identd(ip, b"")
    identd.reply = reply
    identd.start()
    try:
        code, env, (cip, cport), (lip, lport) = run_tcp_env(qmail_home, dnsmasq, ["-t", "5"], source=ip)
    finally:
        identd.join(30)
        identd.sock.close()
    assert code == 0
    assert identd.query == b"%d , %d\r\n" % (cport, lport)
    assert env.get(b"TCPREMOTEINFO") == info


def test_qmail_smtpd_under_xinetd(fresh_home, tmp):
    """inetd + tcp-env + qmail-smtpd, with the real xinetd on a loopback port."""
    need_root()
    home = fresh_home
    with open(os.path.join(home, "control", "me"), "w") as f:
        f.write("xinetd.example\n")
    with open(os.path.join(home, "control", "rcpthosts"), "w") as f:
        f.write("xinetd.example\n")
    for port in random.sample(range(25000, 26000), 20):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        break
    conf = os.path.join(tmp, "xinetd.conf")
    with open(conf, "w") as f:
        f.write("service pyqmail-smtp-test\n{\n"
                "  type = UNLISTED\n  socket_type = stream\n  protocol = tcp\n  wait = no\n"
                "  flags = IPv4\n  bind = 127.0.0.1\n  port = %d\n  user = qmaild\n"
                "  group = nofiles\n  server = %s\n  server_args = -R %s\n"
                "  env = PATH=/usr/bin:/bin\n  disable = no\n}\n"
                % (port, os.path.join(home, "bin", "tcp-env"), os.path.join(home, "bin", "qmail-smtpd")))
    pidfile = os.path.join(tmp, "xinetd.pid")
    p = subprocess.Popen(["xinetd", "-dontfork", "-f", conf, "-pidfile", pidfile],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def up():
            assert p.poll() is None, p.stderr.read()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@xinetd.example>\r\n"
                      b"RCPT TO:<c@elsewhere.test>\r\nQUIT\r\n")
            out = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
        assert out == (b"220 xinetd.example ESMTP\r\n250 xinetd.example\r\n250 ok\r\n250 ok\r\n"
                       b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
                       b"221 xinetd.example\r\n")
    finally:
        p.terminate()
        p.wait(10)
        p.stderr.close()


def test_huge_ident_timeout(qmail_home, dnsmasq):
    """tcp-env.c scans -t as an unsigned long and hands remoteinfo_get an int;
    a value too big for Python's socket timeout must not make tcp-env fail."""
    ip = "127.0.0.%d" % random.randrange(70, 250)
    identd = Identd(ip, b"%d , %d : USERID : UNIX : joe\r\n")
    identd.start()
    try:
        code, env, _, _ = run_tcp_env(qmail_home, dnsmasq, ["-t", "10000000000"], source=ip)
    finally:
        identd.join(30)
        identd.sock.close()
    assert code == 0
    assert env.get(b"TCPREMOTEINFO") == b"joe"   # (int) 10000000000 = 1410065408 s
