"""qmail-tcpsrv against the real tcpserver (ucspi-tcp): the same SMTP cases,
rules, environment, log lines and process identity under both, plus what only
qmail-tcpsrv does (IPv6, qmail-smtpd without an exec)."""
import os
import re
import select
import shutil
import signal
import smtplib
import socket
import subprocess
import time

import pytest

from conftest import need_root, uid
from smtpdhelp import ME, Smtpd, check_received, gid, read_reply, read_until_closed, wait_for
from pyqmail import cdb, qmail_tcpsrv

SERVERS = ["tcpserver", "qmail-tcpsrv"]
PORTS = (27000, 28000)

DUMP = """#!/bin/sh
# what an exec'd program sees: its environment, ids, signal state and fds
d="$1/$TCPREMOTEIP"
env -0 | sort -z > "$d.env"
ls /proc/self/fd > "$d.fd"
exec grep -E '^(Sig(Ign|Blk|Cgt)|Uid|Gid|Groups):' /proc/self/status > "$d.status"
"""


@pytest.fixture(params=SERVERS)
def smtpd(request, fresh_home):
    need_root()
    server = Smtpd(fresh_home)
    server.kind = request.param
    yield server
    server.stop()


@pytest.fixture
def home(fresh_home):
    need_root()
    server = Smtpd(fresh_home)
    yield server
    server.stop()


def start(smtpd, *options, server=None, **kw):
    return smtpd.start(*options, server=server or smtpd.kind, ports=PORTS, **kw)


def pids(smtpd, what=b"pid"):
    """Child pids in the order the log names them: `pid P from` or `end P status`."""
    pattern = rb"tcpserver: pid (\d+) from" if what == b"pid" else rb"tcpserver: end (\d+) status"
    return [int(p) for p in re.findall(pattern, smtpd.log())]


def wait_end(smtpd, count):
    wait_for(lambda: len(pids(smtpd, b"end")) >= count)


def normalized_log(smtpd):
    """The log with pids and ports replaced, to compare two runs."""
    out = []
    for line in smtpd.log().splitlines():
        line = re.sub(rb"^tcpserver: (pid|ok|deny|end) \d+", rb"tcpserver: \1 P", line)
        line = re.sub(rb"^(tcpserver: (?:ok|deny) P \S*:\S*:)%d " % smtpd.port, rb"\1PORT ", line)
        line = re.sub(rb":\d+$", b":RPORT", line) if re.match(rb"tcpserver: (ok|deny)", line) else line
        out.append(line)
    return out


def clear_captured(smtpd):
    for name in os.listdir(smtpd.captured):
        os.unlink(os.path.join(smtpd.captured, name))


def transaction(source, smtpd, rcpt=b"b@host.example.com", body=b"Subject: t\r\n\r\nbody\r\n"):
    with smtpd.connect(source) as s:
        greeting, buf = read_reply(s)
        s.sendall(b"HELO client.test\r\nMAIL FROM:<a@x>\r\nRCPT TO:<" + rcpt + b">\r\nDATA\r\n" +
                  body + b".\r\nQUIT\r\n")
        return greeting + buf + read_until_closed(s)


# ---- the same SMTP cases under tcpserver and qmail-tcpsrv

def test_greeting_helo_quit(smtpd):
    start(smtpd)
    with smtpd.connect() as s:
        assert read_reply(s) == (b"220 host.example.com ESMTP\r\n", b"")
        s.sendall(b"HELO client.test\r\n")
        assert read_reply(s)[0] == b"250 host.example.com\r\n"
        s.sendall(b"QUIT\r\n")
        assert read_until_closed(s) == b"221 host.example.com\r\n"


def test_pipelined_transaction_byte_exact(smtpd):
    start(smtpd)
    with smtpd.connect() as s:
        greeting, buf = read_reply(s)
        assert greeting == b"220 host.example.com ESMTP\r\n"
        s.sendall(b"EHLO one.write\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\n"
                  b"RCPT TO:<nobody@elsewhere.test>\r\nDATA\r\nSubject: one\r\n\r\n..dot\r\n"
                  b"bare\rcr\r\n\xe9\xff 8-bit\r\n.\r\nMAIL FROM:<c@x>\r\nRCPT TO:<d@host.example.com>\r\n"
                  b"DATA\r\nsecond\r\n.\r\nQUIT\r\n")
        out = buf + read_until_closed(s)
    assert re.fullmatch(
        rb"250-host.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n250 ok\r\n250 ok\r\n"
        rb"553 sorry, that domain isn't in my list of allowed rcpthosts \(#5.7.1\)\r\n"
        rb"354 go ahead\r\n250 ok \d+ qp \d+\r\n250 ok\r\n250 ok\r\n354 go ahead\r\n"
        rb"250 ok \d+ qp \d+\r\n221 host.example.com\r\n", out), out
    items = smtpd.items()
    assert sorted(envelope for _, envelope, _ in items) == [
        b"Fa@x\0Tb@host.example.com\0\0", b"Fc@x\0Td@host.example.com\0\0"]
    bodies = sorted(check_received(m, helo=b"one.write") for m, _, _ in items)
    assert bodies == [b"Subject: one\n\n.dot\nbare\rcr\n\xe9\xff 8-bit\n", b"second\n"]
    for _, _, ids in items:
        assert ids == b"%d %d %s" % (uid("qmaild"), gid("nofiles"), smtpd.home.encode())


def test_relayclient_databytes_and_deny_from_rules(smtpd):
    start(smtpd)
    out = transaction("127.0.0.1", smtpd, rcpt=b"b@elsewhere.test")
    assert b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n" in out
    out = transaction("127.0.0.2", smtpd, rcpt=b"b@elsewhere.test")
    assert re.search(rb"\r\n250 ok \d+ qp \d+\r\n", out), out
    out = transaction("127.0.0.3", smtpd, rcpt=b"b@elsewhere.test", body=b"12345\r\n")
    assert re.search(rb"\r\n250 ok \d+ qp \d+\r\n", out), out
    out = transaction("127.0.0.3", smtpd, rcpt=b"b@elsewhere.test", body=b"123456\r\n")
    assert b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n" in out
    with smtpd.connect("127.0.0.4") as s:          # deny: closed without a byte
        assert read_until_closed(s) == b""
    assert sorted(envelope for _, envelope, _ in smtpd.items()) == [
        b"Fa@x\0Tb@elsewhere.test\0\0", b"Fa@x\0Tb@elsewhere.test@r\0\0"]
    wait_end(smtpd, 5)
    assert re.search(rb"tcpserver: deny \d+ host.example.com:127.0.0.1:%d :127.0.0.4::\d+\n"
                     % smtpd.port, smtpd.log())


def test_swaks_pipelined(smtpd):
    start(smtpd)
    done = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(smtpd.port),
                           "--from", "swaks@x.test", "--to", "b@host.example.com",
                           "--helo", "swaks.test", "--pipeline", "--body", "swaks body",
                           "--header", "Subject: swaks"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    ((message, envelope, ids),) = smtpd.items()
    assert envelope == b"Fswaks@x.test\0Tb@host.example.com\0\0"
    rest = check_received(message, helo=b"swaks.test")
    assert b"Subject: swaks\n" in rest and b"\n\nswaks body\n" in rest


def test_smtplib_round_trip(smtpd):
    start(smtpd)
    body = (b"From: a@x\r\nSubject: round trip\r\n\r\n.leading dot\r\n" + b"L" * 998 + b"\r\nend\r\n")
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=20) as client:
        assert client.ehlo("client.test") == (250, b"host.example.com\nPIPELINING\n8BITMIME")
        assert client.sendmail("a@x", ["b@host.example.com", "c@y.sub.example.com"], body) == {}
    ((message, envelope, ids),) = smtpd.items()
    assert envelope == b"Fa@x\0Tb@host.example.com\0Tc@y.sub.example.com\0\0"
    assert check_received(message, helo=b"client.test") == body.replace(b"\r\n", b"\n")


def test_concurrency_limit(smtpd):
    start(smtpd, "-c", "2")
    first, second = smtpd.connect(), smtpd.connect()
    with first, second:
        assert read_reply(first)[0] == read_reply(second)[0] == b"220 host.example.com ESMTP\r\n"
        third = smtpd.connect()
        with third:
            # at the limit the third connection waits in the backlog, unanswered
            assert select.select([third], [], [], 1.0)[0] == []
            assert len(pids(smtpd)) == 2
            assert smtpd.log().count(b"tcpserver: status: 2/2\n") == 1
            first.sendall(b"QUIT\r\n")
            assert read_until_closed(first) == b"221 host.example.com\r\n"
            assert read_reply(third)[0] == b"220 host.example.com ESMTP\r\n"
    wait_end(smtpd, 3)
    # the third child was started only after the first one ended
    log = smtpd.log()
    first_end = log.index(b"tcpserver: end ")
    assert log[:first_end].count(b"tcpserver: pid ") == 2
    assert log.count(b"tcpserver: pid ") == 3
    assert re.match(rb"tcpserver: end \d+ status 0\n", log[first_end:])


def test_sigterm_stops_listener_sessions_finish(smtpd):
    start(smtpd)
    transaction("127.0.0.1", smtpd)
    wait_end(smtpd, 1)
    (done_pid,) = pids(smtpd, b"end")
    if smtpd.kind == "tcpserver":
        assert not os.path.exists("/proc/%d" % done_pid)      # reaped, not a zombie
    else:
        # qmail-smtpd's process waits for the next session, asleep
        assert proc_state(done_pid) == ("qmail-smtpd", "S")
    s = smtpd.connect()
    with s:
        read_reply(s)
        s.sendall(b"MAIL FROM:<late@x>\r\n")
        assert read_reply(s)[0] == b"250 ok\r\n"
        late_pid = pids(smtpd)[1]
        assert (late_pid == done_pid) == (smtpd.kind == "qmail-tcpsrv")
        smtpd.server.send_signal(signal.SIGTERM)
        assert smtpd.server.wait(10) == 0
        with pytest.raises(ConnectionRefusedError):
            smtpd.connect().close()
        assert proc_state(late_pid)[1] in "RS"
        # the session under way goes on to the end, as under tcpserver
        s.sendall(b"RCPT TO:<b@host.example.com>\r\nDATA\r\nafter TERM\r\n.\r\nQUIT\r\n")
        out = read_until_closed(s)
    assert re.fullmatch(rb"250 ok\r\n354 go ahead\r\n250 ok \d+ qp \d+\r\n221 host.example.com\r\n",
                        out), out
    assert sorted(e for _, e, _ in smtpd.items()) == [b"Fa@x\0Tb@host.example.com\0\0",
                                                      b"Flate@x\0Tb@host.example.com\0\0"]
    # and then it is gone: nothing waits for a listener that is no more
    wait_for(lambda: proc_state(late_pid) is None)


def proc_state(pid):
    """(comm, state letter) of a process, None once it is gone (or a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    comm = data[data.index("(") + 1:data.rindex(")")]
    state = data.rsplit(")", 1)[1].split()[0]
    return None if state in "ZX" else (comm, state)


def test_bind_failure_and_usage(smtpd):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        listener = "tcpserver" if smtpd.kind == "tcpserver" else smtpd.program("qmail-tcpsrv")
        done = subprocess.run([listener, "127.0.0.1", str(port), "true"], capture_output=True,
                              timeout=30)
    assert (done.returncode, done.stderr) == (111, b"tcpserver: fatal: unable to bind: "
                                                   b"address already used\n")
    done = subprocess.run([listener, "127.0.0.1", "no-such-service-x", "true"],
                          capture_output=True, timeout=30)
    assert (done.returncode, done.stderr) == (
        111, b"tcpserver: fatal: unable to figure out port number for no-such-service-x\n")
    done = subprocess.run([listener, "-v", "127.0.0.1"], capture_output=True, timeout=30)
    assert done.returncode == 100 and done.stderr.startswith(b"tcpserver: usage: ")


def test_missing_rules_file(smtpd):
    """tcpserver opens the rules per connection: a missing file drops the client,
    unless -X."""
    start(smtpd)
    os.unlink(os.path.join(smtpd.home, "control", "tcp.smtp.cdb"))
    with smtpd.connect() as s:
        assert read_until_closed(s) == b""
    wait_end(smtpd, 1)
    assert (b"tcpserver: warning: dropping connection, unable to read %s/control/tcp.smtp.cdb: "
            b"file does not exist\n" % smtpd.home.encode()) in smtpd.log()
    assert b"tcpserver: end %d status 28416\n" % pids(smtpd)[0] in smtpd.log()
    smtpd.stop()
    start(smtpd, "-X")
    os.unlink(os.path.join(smtpd.home, "control", "tcp.smtp.cdb"))
    with smtpd.connect() as s:
        assert read_reply(s)[0] == b"220 host.example.com ESMTP\r\n"


# ---- the two side by side

def run_both(home, scenario, options=(), **kw):
    """Run scenario(home) under each server in turn; {server: result}."""
    results = {}
    for server in SERVERS:
        clear_captured(home)
        start(home, *options, server=server, **kw)
        try:
            results[server] = scenario(home)
        finally:
            home.stop()
    return results


def test_same_environment_and_log_as_tcpserver(home):
    """qmail-smtpd (and the QMAILQUEUE program it runs) see exactly the environment
    they see under tcpserver; the -v lines are tcpserver's."""
    home.env["KEPT"] = "from the listener"
    # a shell in front of the capture keeps the environment exactly as qmail-smtpd
    # passed it (Python would coerce the locale again)
    wrapper = os.path.join(home.base, "env-then-capture")
    with open(wrapper, "w") as f:
        f.write('#!/bin/sh\nenv -0 > %s/shell.$$.environ\nexec %s\n' % (home.captured, home.capture))
    os.chmod(wrapper, 0o755)
    home.env["QMAILQUEUE"] = wrapper

    def scenario(h):
        transaction("127.0.0.1", h)
        wait_end(h, 1)
        transaction("127.0.0.3", h, rcpt=b"b@elsewhere.test", body=b"1234\r\n")
        wait_end(h, 2)
        with h.connect("127.0.0.4") as s:
            read_until_closed(s)
        wait_end(h, 3)
        environs = []
        for name in sorted(os.listdir(h.captured)):
            if name.startswith("shell."):
                with open(os.path.join(h.captured, name), "rb") as f:
                    environs.append(dict(e.split(b"=", 1) for e in f.read().split(b"\0") if e))
        environs.sort(key=lambda e: e[b"TCPREMOTEIP"])
        for e in environs:
            assert int(e.pop(b"TCPLOCALPORT")) == h.port
            assert 1024 <= int(e.pop(b"TCPREMOTEPORT")) < 65536
        return environs, normalized_log(h)

    results = run_both(home, scenario)
    assert results["tcpserver"] == results["qmail-tcpsrv"]
    environs, log = results["qmail-tcpsrv"]
    # qmail-smtpd's environment, handed on: the listener's, tcpserver's variables
    # and the rule's variables; not the interpreter's locale coercion (PEP 538)
    assert len(environs) == 2
    assert environs[1].pop(b"PWD") == home.home.encode()     # the shell's own
    assert environs[1] == {b"PATH": b"/usr/bin:/bin", b"QMAILQUEUE": wrapper.encode(),
                           b"KEPT": b"from the listener", b"PROTO": b"TCP",
                           b"TCPLOCALIP": b"127.0.0.1", b"TCPLOCALHOST": ME,
                           b"TCPREMOTEIP": b"127.0.0.3", b"DATABYTES": b"6", b"RELAYCLIENT": b"@r"}
    assert log == [
        b"tcpserver: status: 0/40",
        b"tcpserver: status: 1/40", b"tcpserver: pid P from 127.0.0.1",
        b"tcpserver: ok P host.example.com:127.0.0.1:PORT :127.0.0.1::RPORT",
        b"tcpserver: end P status 0", b"tcpserver: status: 0/40",
        b"tcpserver: status: 1/40", b"tcpserver: pid P from 127.0.0.3",
        b"tcpserver: ok P host.example.com:127.0.0.1:PORT :127.0.0.3::RPORT",
        b"tcpserver: end P status 0", b"tcpserver: status: 0/40",
        b"tcpserver: status: 1/40", b"tcpserver: pid P from 127.0.0.4",
        b"tcpserver: deny P host.example.com:127.0.0.1:PORT :127.0.0.4::RPORT",
        b"tcpserver: end P status 25600", b"tcpserver: status: 0/40"]


RULES = (b'127.0.0.5:allow,A="exact"\n'
         b'127.0.0.:allow,B="prefix3"\n'
         b'127.0.:allow,C="prefix2"\n'
         b"127.0.0.10-11:deny\n"
         b'127.0.0.12:allow,TCPLOCALHOST="fake",PROTO="x",E=/with space/,F="",KEPT="over"\n'
         b"127.0.1.1:allow\n"
         b'# a comment\n'
         b':allow,Z="default"\n')
SOURCES = ["127.0.0.1", "127.0.0.5", "127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.1.1",
           "127.0.2.1", "127.1.0.1"]


def test_rules_as_tcpserver_applies_them(home):
    """The same cdb, made by the real tcprules: the same allow/deny decisions and
    variables, for a program that is exec'd (not a pyqmail one) under both."""
    dump = os.path.join(home.base, "dump")
    with open(dump, "w") as f:
        f.write(DUMP)
    os.chmod(dump, 0o755)
    home.env["KEPT"] = "from the listener"

    out = os.path.join(home.base, "out")
    os.mkdir(out)
    os.chown(out, uid("qmaild"), -1)

    def scenario(h):
        for n, source in enumerate(SOURCES):
            with h.connect(source) as s:
                assert read_until_closed(s) == b""
            wait_end(h, n + 1)
        files = {}
        for name in sorted(os.listdir(out)):
            with open(os.path.join(out, name), "rb") as f:
                data = f.read()
            os.unlink(os.path.join(out, name))
            if name.endswith(".env"):
                data = data.split(b"\0")
                assert b"TCPLOCALPORT=%d" % h.port in data
                data = sorted(e for e in data if not e.startswith((b"TCPREMOTEPORT=", b"TCPLOCALPORT=")))
            files[name] = data
        return files, normalized_log(h)

    results = run_both(home, scenario, rules=RULES, program=[dump, out])
    files, log = results["qmail-tcpsrv"]
    assert files == results["tcpserver"][0]
    assert log == results["tcpserver"][1]
    assert "127.0.0.10.env" not in files and "127.0.0.11.env" not in files
    assert log.count(b"tcpserver: end P status 25600") == 2
    env = {ip: dict(e.split(b"=", 1) for e in files[ip + ".env"] if e) for ip in
           ["127.0.0.1", "127.0.0.5", "127.0.0.12", "127.0.1.1", "127.0.2.1", "127.1.0.1"]}
    assert env["127.0.0.5"][b"A"] == b"exact" and b"B" not in env["127.0.0.5"]
    assert env["127.0.0.1"][b"B"] == b"prefix3"
    assert env["127.0.2.1"][b"C"] == b"prefix2"
    assert env["127.1.0.1"][b"Z"] == b"default"
    assert not {b"A", b"B", b"C", b"Z"} & set(env["127.0.1.1"])
    e = env["127.0.0.12"]
    assert (e[b"TCPLOCALHOST"], e[b"PROTO"], e[b"E"], e[b"F"], e[b"KEPT"]) == (
        b"fake", b"x", b"with space", b"", b"over")
    status = files["127.0.0.1.status"]
    assert b"Uid:\t%d\t%d\t%d\t%d\n" % ((uid("qmaild"),) * 4) in status
    assert b"Groups:\t%d \n" % gid("nofiles") in status
    # no standard signal ignored or blocked (what the caller's environment does
    # with the real-time ones it passes on to both alike, as compared above)
    fields = dict(line.split(b":\t") for line in status.split(b"\n") if line)
    assert int(fields[b"SigIgn"], 16) & 0x7FFFFFFF == 0 and int(fields[b"SigBlk"], 16) & 0x7FFFFFFF == 0


def proc_view(pid):
    """What /proc shows of a process: ids, signal state, fds, names."""
    with open("/proc/%d/status" % pid, "rb") as f:
        status = [line for line in f.read().splitlines()
                  if line.split(b":")[0] in (b"Uid", b"Gid", b"Groups", b"SigIgn", b"SigBlk",
                                             b"SigCgt")]
    with open("/proc/%d/comm" % pid, "rb") as f:
        comm = f.read()
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = [a for a in f.read().split(b"\0") if a]
    fds = sorted(os.listdir("/proc/%d/fd" % pid))
    return status, comm, fds, argv


def test_child_identity_like_exec(home):
    """qmail-smtpd's process under qmail-tcpsrv: the uid, gid, groups, signal
    dispositions, fds and name of the exec'd one under tcpserver; the listener
    itself runs as qmaild too (dropped before the first accept)."""
    def scenario(h):
        views = []
        for n in range(2):
            with h.connect() as s:
                assert read_reply(s)[0] == b"220 host.example.com ESMTP\r\n"
                pid = pids(h)[n]
                views.append(proc_view(pid))
                listener = proc_view(h.server.pid)[0][:3]
                s.sendall(b"QUIT\r\n")
                read_until_closed(s)
            wait_end(h, n + 1)
        assert views[1] == views[0]    # the second session starts as the first did
        status, comm, fds, argv = views[0]
        # a reusable process's socket pair with the listener: close-on-exec
        channels = [n for n in fds if n not in ("0", "1", "2")]
        for n in channels:
            assert os.readlink("/proc/%d/fd/%s" % (pid, n)).startswith("socket:")
            with open("/proc/%d/fdinfo/%s" % (pid, n)) as f:
                flags = int(re.search(r"flags:\s*(\d+)", f.read()).group(1), 8)
            assert flags & os.O_CLOEXEC
            fds.remove(n)
        return status, comm, fds, argv, listener, len(channels), len(set(pids(h)))

    results = run_both(home, scenario)
    status, comm, fds, argv, listener, channels, processes = results["qmail-tcpsrv"]
    assert (channels, processes) == (1, 1)
    assert results["tcpserver"][5:] == (0, 2)
    assert (status, comm, fds) == results["tcpserver"][:3]
    assert listener == results["tcpserver"][4]
    ids = "%d" % uid("qmaild"), "%d" % gid("nofiles")
    assert status[:3] == [b"Uid:\t%s\t%s\t%s\t%s" % ((ids[0].encode(),) * 4),
                          b"Gid:\t%s\t%s\t%s\t%s" % ((ids[1].encode(),) * 4),
                          b"Groups:\t%s " % ids[1].encode()]
    assert listener == status[:3]
    assert comm == b"qmail-smtpd\n"
    assert fds == ["0", "1", "2"]
    # under tcpserver the interpreter runs the script; here argv[0] is the program
    assert results["tcpserver"][3][-1] == home.program().encode()
    assert argv == [home.program().encode()]


def test_startup_time_against_tcpserver(home):
    """Connect to greeting: the forked qmail-smtpd answers without starting Python."""
    def scenario(h):
        times = []
        for _ in range(15):
            begin = time.monotonic()
            with h.connect() as s:
                read_reply(s)
                times.append(time.monotonic() - begin)
                s.sendall(b"QUIT\r\n")
                read_until_closed(s)
        times.sort()
        return times[len(times) // 2]

    results = run_both(home, scenario)
    print("\nconnect to greeting, median of 15: tcpserver+exec %.1f ms, qmail-tcpsrv %.1f ms"
          % (results["tcpserver"] * 1000, results["qmail-tcpsrv"] * 1000))
    assert results["qmail-tcpsrv"] < results["tcpserver"]


# ---- one process, one session after another (qmail-tcpsrv with qmail-smtpd)

def test_sessions_share_a_process_not_its_state(home):
    """The rules' variables of one session never reach the next one served by
    the same process: a relaying client, then one that may not relay, then
    DATABYTES for one client and none for the next; each message's
    QMAILQUEUE sees exactly its own session's environment."""
    start(home, server="qmail-tcpsrv")
    outs = []
    for source, rcpt, body in (("127.0.0.2", b"b@elsewhere.test", b"one\r\n"),
                               ("127.0.0.1", b"b@elsewhere.test", b"two\r\n"),
                               ("127.0.0.3", b"b@host.example.com", b"three, too big\r\n"),
                               ("127.0.0.1", b"b@host.example.com", b"four, not too big\r\n")):
        outs.append(transaction(source, home, rcpt=rcpt, body=body))
        # the process is idle again once the listener has its report (a client
        # quicker than that is given another process)
        wait_end(home, len(outs))
    assert re.search(rb"\r\n250 ok \d+ qp \d+\r\n", outs[0]), outs[0]
    assert b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n" in outs[1]
    assert b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n" in outs[2]
    assert re.search(rb"\r\n250 ok \d+ qp \d+\r\n", outs[3]), outs[3]
    assert len(set(pids(home))) == 1
    # (qmail-smtpd may have started QMAILQUEUE for the message too big, too)
    rules = {b"127.0.0.1": (None, None), b"127.0.0.2": (b"", None), b"127.0.0.3": (b"@r", b"6")}
    seen = [(e[b"TCPREMOTEIP"], (e.get(b"RELAYCLIENT"), e.get(b"DATABYTES")))
            for e in home.environs()]
    assert {b"127.0.0.1", b"127.0.0.2"} <= {ip for ip, _ in seen}
    assert all(rules[ip] == variables for ip, variables in seen), seen


def reusable_listener(home, idle=qmail_tcpsrv.MAX_IDLE):
    """qmail-tcpsrv started through a script that first sets MAX_IDLE and
    gives qmail-smtpd's sessions a few misdeeds, by client address: 127.0.0.7
    puts /dev/null on fd 2, 127.0.0.8 changes its umask, cwd and a signal
    disposition, 127.0.0.9 raises."""
    wrapper = home.program("qmail-tcpsrv")
    with open(wrapper, "rb") as f:
        python = f.readline()[2:].split()[0].decode()
    script = os.path.join(home.base, "tcpsrv-launcher")
    with open(script, "w") as f:
        f.write(LAUNCHER % {"lib": os.path.join(home.home, "lib", "python"), "idle": idle,
                            "wrapper": wrapper})
    return [python, "-IS", script]


LAUNCHER = """
import os, signal, sys
sys.path.insert(0, %(lib)r)
from pyqmail import qmail_smtpd, qmail_tcpsrv
qmail_tcpsrv.MAX_IDLE = %(idle)r
real = qmail_smtpd.forked_main
def forked_main(env):
    if env[b"TCPREMOTEIP"] == b"127.0.0.7":
        os.dup2(os.open("/dev/null", os.O_WRONLY), 2)
    if env[b"TCPREMOTEIP"] == b"127.0.0.8":
        os.umask(0)
        os.chdir("/")
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if env[b"TCPREMOTEIP"] == b"127.0.0.9":
        raise RuntimeError("a bug")
    return real(env)
qmail_smtpd.forked_main = forked_main
sys.argv[0] = %(wrapper)r
qmail_tcpsrv.main()
"""


def session_view(h, source="127.0.0.1"):
    """(pid, its /proc view and umask while it serves a session from source,
    its cwd once that has ended)."""
    with h.connect(source) as s:
        assert read_reply(s)[0] == b"220 host.example.com ESMTP\r\n"
        pid = pids(h)[-1]
        with open("/proc/%d/status" % pid) as f:
            umask = re.search(r"Umask:\s*(\d+)", f.read()).group(1)
        view = (pid, proc_view(pid), umask)
        s.sendall(b"QUIT\r\n")
        assert read_until_closed(s) == b"221 host.example.com\r\n"
    wait_end(h, len(pids(h)))
    try:
        cwd = os.readlink("/proc/%d/cwd" % pid)
    except OSError:
        cwd = None     # gone
    return view + (cwd,)


def test_a_session_leaves_the_next_the_state_it_found(home):
    """A session that changes its umask, cwd and a signal disposition: the
    next one in the same process starts with the first one's; a session that
    ends in an uncaught exception (exit 1, its traceback on stderr as an
    exec'd program's), or that puts something else on fd 2 (the log), is
    the process's last."""
    start(home, server=reusable_listener(home), cwd=home.base)
    first = session_view(home)
    assert first[3] == home.base                      # the listener's cwd
    assert session_view(home, "127.0.0.8")[1:] != first[1:]
    assert session_view(home) == first                # the same process, as it was
    with home.connect("127.0.0.9") as s:
        assert read_until_closed(s) == b""
    wait_end(home, 4)
    log = home.log()
    assert b"RuntimeError: a bug\n" in log
    assert log.count(b"tcpserver: end %d status 256\n" % first[0]) == 1
    wait_for(lambda: proc_state(first[0]) is None)
    after = session_view(home)
    assert after[0] != first[0] and after[1:] == first[1:]
    # one that lost the log (its stderr) is the process's last, too
    assert session_view(home, "127.0.0.7")[0] == after[0]
    wait_for(lambda: proc_state(after[0]) is None)
    last = session_view(home)
    assert last[0] != after[0] and last[1:] == first[1:]
    assert re.search(rb"tcpserver: pid %d from 127.0.0.1\n" % last[0], home.log())


def test_a_process_serves_max_use_sessions(home):
    """MAX_USE sessions in one process, then it exits and the next session
    gets a new one; every session is logged as tcpserver logs a child."""
    start(home, server="qmail-tcpsrv")
    for n in range(qmail_tcpsrv.MAX_USE + 1):
        with home.connect() as s:
            s.sendall(b"QUIT\r\n")
            assert read_until_closed(s) == b"220 host.example.com ESMTP\r\n221 host.example.com\r\n"
        wait_end(home, n + 1)
    served = pids(home)
    assert served[:-1] == [served[0]] * qmail_tcpsrv.MAX_USE and served[-1] != served[0]
    assert pids(home, b"end") == served
    assert home.log().count(b" status 0\n") == qmail_tcpsrv.MAX_USE + 1
    wait_for(lambda: proc_state(served[0]) is None)


def test_idle_processes_go_and_killed_ones_are_replaced(home):
    """An idle process goes after MAX_IDLE seconds (here 2) and the listener
    closes its end; one killed while idle is replaced without an end line;
    one killed during a session is logged as a child killed by that signal."""
    start(home, server=reusable_listener(home, idle=2.0))
    first = session_view(home)[0]
    wait_for(lambda: proc_state(first) is None)
    listener_fds = os.listdir("/proc/%d/fd" % home.server.pid)
    assert len(listener_fds) == 6        # 0, 1, 2, the listening socket, the wake-up pipe
    second = session_view(home)[0]
    assert second != first
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: proc_state(second) is None)
    third = session_view(home)[0]
    assert third != second
    with home.connect() as s:
        read_reply(s)
        os.kill(third, signal.SIGKILL)
        assert read_until_closed(s) == b""
    wait_end(home, 4)
    log = home.log()
    assert pids(home, b"end") == [first, second, third, third]
    assert log.endswith(b"tcpserver: end %d status 9\ntcpserver: status: 0/40\n" % third)
    assert session_view(home)[0] not in (first, second, third)


# ---- IPv6 and all addresses (qmail-tcpsrv only: ucspi-tcp 0.88 is IPv4 only)

def test_ipv6_loopback(home):
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6")
    home.env["UNSETME"] = "1"
    start(home, server="qmail-tcpsrv", host="::1")
    # IPv6 rules: the client's address, then prefixes ending in ':'; `-VAR` unsets
    path = os.path.join(home.home, "control", "tcp.smtp.cdb").encode()
    cdb.make(path, path + b".tmp", [(b"::1", b'+RELAYCLIENT=\0-UNSETME\0'), (b"", b"D\0")])
    out = transaction("::1", home, rcpt=b"b@elsewhere.test")
    assert out.startswith(b"220 host.example.com ESMTP\r\n250 host.example.com\r\n")
    assert re.search(rb"\r\n250 ok \d+ qp \d+\r\n221 host.example.com\r\n$", out), out
    ((message, envelope, ids),) = home.items()
    assert envelope == b"Fa@x\0Tb@elsewhere.test\0\0"
    check_received(message, helo=b"client.test", remoteip=b"::1")
    (env,) = home.environs()
    assert b"UNSETME" not in env and env[b"RELAYCLIENT"] == b""
    assert {k: env[k] for k in env if k.startswith(b"TCP") and not k.endswith(b"PORT")} == {
        b"TCPLOCALIP": b"::1", b"TCP6LOCALIP": b"::1", b"TCPLOCALHOST": ME,
        b"TCP6LOCALHOST": ME, b"TCPREMOTEIP": b"::1", b"TCP6REMOTEIP": b"::1"}
    assert env[b"PROTO"] == b"TCP6"
    assert env[b"TCPREMOTEPORT"] == env[b"TCP6REMOTEPORT"]
    wait_end(home, 1)
    assert re.search(rb"\ntcpserver: ok \d+ host.example.com:\?\?1:%d :\?\?1::\d+\n" % home.port,
                     home.log())
    cdb.make(path, path + b".tmp", [(b"::", b"+X=y\0"), (b"", b"D\0")])   # a ':' prefix
    with home.connect() as s:
        assert read_reply(s)[0] == b"220 host.example.com ESMTP\r\n"
    cdb.make(path, path + b".tmp", [(b"", b"D\0")])
    with home.connect() as s:
        assert read_until_closed(s) == b""


def test_host_0_is_every_address(home):
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6")
    start(home, server="qmail-tcpsrv", host="0")
    for host in ("127.0.0.1", "::1"):
        with home.connect(host=host) as s:
            assert read_reply(s)[0] == b"220 host.example.com ESMTP\r\n"
            s.sendall(b"HELO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\n"
                      b"via " + host.encode() + b"\r\n.\r\nQUIT\r\n")
            assert read_until_closed(s).endswith(b"221 host.example.com\r\n")
    environs = sorted(home.environs(), key=lambda e: e[b"PROTO"])
    assert [(e[b"PROTO"], e[b"TCPREMOTEIP"], e[b"TCPLOCALIP"]) for e in environs] == [
        (b"TCP", b"127.0.0.1", b"127.0.0.1"), (b"TCP6", b"::1", b"::1")]
    assert b"TCP6REMOTEIP" not in environs[0]


# ---- pieces

def test_address_handed_to_a_process():
    """The client's address as the listener sends it with the connection: the
    accept() tuple back, IPv4 and IPv6 (with a scope); nothing else taken."""
    for sockaddr in (("127.0.0.1", 1025), ("::1", 25, 0, 0), ("fe80::1%eth0", 65535, 0, 2)):
        assert qmail_tcpsrv.unpack_address(qmail_tcpsrv.pack_address(sockaddr)) == sockaddr
    for data in (b"", b"127.0.0.1", b"127.0.0.1\x00-1", b"::1\x0025\x000", b"\xff\x001",
                 b"::1\x001\x002\x003\x004", b"127.0.0.1\x00x"):
        assert qmail_tcpsrv.unpack_address(data) is None, data


def test_rule_keys_order():
    assert list(qmail_tcpsrv.rule_keys(b"1.2.3.4", b"mx.example.com", b"joe")) == [
        b"joe@1.2.3.4", b"joe@=mx.example.com", b"1.2.3.4", b"=mx.example.com",
        b"1.2.3.", b"1.2.", b"1.", b"=.example.com", b"=.com", b"=", b""]
    assert list(qmail_tcpsrv.rule_keys(b"1.2.3.4", None, None)) == [
        b"1.2.3.4", b"1.2.3.", b"1.2.", b"1.", b""]
    assert list(qmail_tcpsrv.rule_keys(b"2001:db8::1", None, None)) == [
        b"2001:db8::1", b"2001:db8::", b"2001:db8:", b"2001:", b""]


def test_found_and_safecats():
    env = {b"GONE": b"x", b"KEEP": b"y"}
    assert qmail_tcpsrv.apply_rule(b"+A=1\0+B=\0-GONE\0+C\0+D=x=y\0partial", env) is False
    assert env == {b"KEEP": b"y", b"A": b"1", b"B": b"", b"D": b"x=y"}
    assert qmail_tcpsrv.apply_rule(b"D\0+A=2\0", env) is True
    assert qmail_tcpsrv.safe(b"a:b%c d\x7f\xe9") == b"a?b?c?d??"
    assert qmail_tcpsrv.safe(b"x" * 101) == b"x" * 100 + b"..."
    assert qmail_tcpsrv.safe(b"x" * 100) == b"x" * 100
    assert qmail_tcpsrv.todot([b"Mx", b"Ex.ample", b"a_b-c"]) == b"mx.ex\\056ample.a_b-c"
    assert qmail_tcpsrv.ptr_name(b"192.0.2.1") == b"1.2.0.192.in-addr.arpa"
    assert qmail_tcpsrv.ptr_name(b"::1") == b"1." + b"0." * 31 + b"ip6.arpa"


# ---- -h (DNS) and -r (ident) against tcpserver

class Identd:
    """An RFC 1413 server on ADDRESS:113 that names every connection's user joe."""

    def __init__(self, address):
        import threading
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 113))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.stopping = False
        self.queries = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                query = b""
                while not query.endswith(b"\n"):
                    chunk = conn.recv(100)
                    if not chunk:
                        break
                    query += chunk
                self.queries.append(query)
                conn.sendall(query.strip() + b" : USERID : UNIX : joe\r\n")

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def names():
    """dnsmasq on 127.0.27.53:53 (tcpserver's djbdns library asks port 53 of
    $DNSCACHEIP) with PTR records for the test addresses, and an identd for
    127.0.0.9."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.path.exists(binary):
        pytest.skip("dnsmasq not installed (Debian dnsmasq-base)")
    address = "127.0.27.53"
    proc = subprocess.Popen(
        [binary, "--no-daemon", "--port=53", "--listen-address=" + address, "--bind-interfaces",
         "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--user=nobody",
         "--local=/0.0.127.in-addr.arpa/", "--ptr-record=1.0.0.127.in-addr.arpa,Mail.Example.COM",
         "--ptr-record=9.0.0.127.in-addr.arpa,client.example.test"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    identd = None
    try:
        def answers():
            assert proc.poll() is None, "dnsmasq did not start"
            return qmail_tcpsrv.dns_name(b"127.0.0.9", {b"DNSCACHEIP": address.encode()}) \
                == b"client.example.test"
        wait_for(answers)
        identd = Identd("127.0.0.9")
        yield address, identd
    finally:
        if identd is not None:
            identd.stop()
        proc.terminate()
        proc.wait(10)


def test_remotehost_and_remoteinfo_as_tcpserver(home, names):
    """-h without -l (PTR names for both ends, lowercased) and -r (ident): the
    same environment, rules (INFO@IP, =HOST) and log lines as tcpserver's."""
    address, identd = names
    dump = os.path.join(home.base, "dump")
    with open(dump, "w") as f:
        f.write(DUMP)
    os.chmod(dump, 0o755)
    out = os.path.join(home.base, "out")
    os.mkdir(out)
    os.chown(out, uid("qmaild"), -1)
    home.env["DNSCACHEIP"] = address
    rules = (b'joe@127.0.0.9:allow,RULE="info@ip"\n'
             b'=.example.com:allow,RULE="=.suffix"\n'
             b':allow,RULE="default"\n')

    def scenario(h):
        for n, source in enumerate(["127.0.0.9", "127.0.0.1", "127.0.0.10"]):
            with h.connect(source) as s:
                assert read_until_closed(s) == b""
            wait_end(h, n + 1)
        files = {}
        for name in sorted(os.listdir(out)):
            with open(os.path.join(out, name), "rb") as f:
                data = f.read()
            os.unlink(os.path.join(out, name))
            if name.endswith(".env"):
                data = sorted(e for e in data.split(b"\0")
                              if not e.startswith((b"TCPREMOTEPORT=", b"TCPLOCALPORT=")))
            files[name] = data
        return files, normalized_log(h)

    # -h -r after the helper's -H -R; no -l: the local name comes from DNS too
    results = run_both(home, scenario, options=("-h", "-r", "-t", "5"), rules=rules,
                       program=[dump, out], localname=None)
    assert results["qmail-tcpsrv"] == results["tcpserver"]
    files, log = results["qmail-tcpsrv"]
    env = {ip: dict(e.split(b"=", 1) for e in files[ip + ".env"] if e)
           for ip in ("127.0.0.9", "127.0.0.1", "127.0.0.10")}
    assert (env["127.0.0.9"][b"TCPREMOTEHOST"], env["127.0.0.9"][b"TCPREMOTEINFO"],
            env["127.0.0.9"][b"RULE"]) == (b"client.example.test", b"joe", b"info@ip")
    assert env["127.0.0.1"][b"TCPREMOTEHOST"] == b"mail.example.com"
    assert env["127.0.0.1"][b"RULE"] == b"=.suffix"
    assert b"TCPREMOTEHOST" not in env["127.0.0.10"] and env["127.0.0.10"][b"RULE"] == b"default"
    assert b"TCPREMOTEINFO" not in env["127.0.0.1"]     # no identd there
    assert env["127.0.0.9"][b"TCPLOCALHOST"] == b"mail.example.com"
    assert b"tcpserver: ok P mail.example.com:127.0.0.1:PORT client.example.test:127.0.0.9:joe:RPORT" \
        in log
    assert len(identd.queries) == 2


def test_program_run_through_its_main(home):
    """A program without forked_main (qmail-popup) runs in-process through
    main(), with os.environ and sys.argv as an exec would give them: the
    checkpassword program it runs sees what it sees under tcpserver."""
    out = os.path.join(home.base, "popup-out")
    os.mkdir(out)
    os.chown(out, uid("qmaild"), -1)
    dump = os.path.join(home.base, "dump-env")
    with open(dump, "w") as f:
        f.write('#!/bin/sh\nenv -0 > %s/env.$$\nexit 1\n' % out)
    os.chmod(dump, 0o755)
    home.env["KEPT"] = "from the listener"

    def scenario(h):
        with h.connect() as s:
            assert s.recv(4096).startswith(b"+OK <")
            s.sendall(b"USER joe\r\nPASS secret\r\n")
            assert read_until_closed(s) == b"+OK \r\n-ERR authorization failed\r\n"
        wait_end(h, 1)
        (name,) = os.listdir(out)
        with open(os.path.join(out, name), "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if e)
        os.unlink(os.path.join(out, name))
        assert int(env.pop(b"TCPLOCALPORT")) == h.port
        env.pop(b"TCPREMOTEPORT")
        env.pop(b"PWD")
        return env

    results = run_both(home, scenario, program=[home.program("qmail-popup"), "pop.example.com", dump])
    assert results["qmail-tcpsrv"] == results["tcpserver"] == {
        b"PATH": b"/usr/bin:/bin", b"KEPT": b"from the listener", b"PROTO": b"TCP",
        b"TCPLOCALIP": b"127.0.0.1", b"TCPLOCALHOST": ME, b"TCPREMOTEIP": b"127.0.0.1",
        b"QMAILQUEUE": home.env["QMAILQUEUE"].encode()}


def test_changed_program_is_execed(home):
    """Only this installation's unchanged wrapper runs in-process: an edited
    bin/qmail-smtpd (or any other program) is exec'd, as tcpserver does."""
    with open(home.program(), "ab") as f:
        f.write(b"# a local change\n")
    start(home, server="qmail-tcpsrv")
    with home.connect() as s:
        assert read_reply(s)[0] == b"220 host.example.com ESMTP\r\n"
        (pid,) = pids(home)
        status, comm, fds, argv = proc_view(pid)
        s.sendall(b"QUIT\r\n")
        assert read_until_closed(s) == b"221 host.example.com\r\n"
    assert comm == b"qmail-smtpd\n"
    assert argv[1:] == [b"-IS", home.program().encode()]


def test_warm_up_leaves_no_trace(home):
    """Before its first fork qmail-tcpsrv runs qmail-smtpd's code over made-up
    sessions (qmail_smtpd.warm_up): nothing is queued, not even through
    QMAILQUEUE, nothing is logged but the status line, no descriptor stays
    open, and the cwd that -x is relative to is kept."""
    start(home, server="qmail-tcpsrv", cwd=home.base,
          rules=b'127.0.0.5:allow,RELAYCLIENT=""\n:allow\n')
    pid = home.server.pid
    assert os.readlink("/proc/%d/cwd" % pid) == home.base
    fds = sorted(os.readlink("/proc/%d/fd/%s" % (pid, n)) for n in os.listdir("/proc/%d/fd" % pid))
    # /dev/null as 0 and 1, the log, the listening socket, the wake-up pipe's two ends
    assert len(fds) == 6 and fds.count("/dev/null") == 2 and home.log_path in fds
    assert sum(fd.startswith("socket:") for fd in fds) == 1
    assert sum(fd.startswith("pipe:") for fd in fds) == 2
    assert os.listdir(home.captured) == []
    assert home.log() == b"tcpserver: status: 0/40\n"
    # the rules were found relative to that cwd, and the children queue as ever
    out = transaction("127.0.0.5", home, rcpt=b"b@elsewhere.test")
    assert re.search(rb"\r\n250 ok \d+ qp \d+\r\n", out), out
    assert [envelope for _, envelope, _ in home.items()] == [b"Fa@x\0Tb@elsewhere.test\0\0"]


def test_warm_up_under_a_long_greeting(home):
    """The warm-up's replies go nowhere that can fill up: a 100 KB greeting
    (four replies carry it) does not hold the listener back, and the children
    send it whole."""
    greeting = b"g" * 100000
    home.control(b"smtpgreeting", greeting + b"\n")
    started = time.monotonic()
    start(home, server="qmail-tcpsrv")
    assert time.monotonic() - started < 20
    with home.connect() as s:
        s.sendall(b"QUIT\r\n")
        assert read_until_closed(s) == b"220 " + greeting + b" ESMTP\r\n221 " + greeting + b"\r\n"
