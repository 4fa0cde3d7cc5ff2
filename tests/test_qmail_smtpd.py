"""qmail-smtpd as installed, alone and under the real tcpserver (ucspi-tcp), with
QMAILQUEUE pointing at a capture program that keeps what qmail-queue would read."""
import os
import re
import shutil
import signal
import smtplib
import subprocess
import time

import pytest

from conftest import PYTHON, need_root, uid
from smtpdhelp import Smtpd, check_received, gid, read_reply, read_until_closed, wait_for


@pytest.fixture
def smtpd(fresh_home):
    need_root()
    server = Smtpd(fresh_home)
    yield server
    server.stop()


# ---- qmail-smtpd on pipes

def test_session_on_pipes(smtpd):
    code, out = smtpd.run(b"HELO client\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\n"
                          b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
                          env={"TCPREMOTEIP": "192.0.2.9", "TCPREMOTEHOST": "peer.test",
                               "TCPREMOTEINFO": "joe", "TCPLOCALIP": "192.0.2.1"})
    assert code == 0
    assert re.fullmatch(rb"220 host.example.com ESMTP\r\n250 host.example.com\r\n250 ok\r\n"
                        rb"250 ok\r\n354 go ahead\r\n250 ok \d+ qp \d+\r\n221 host.example.com\r\n",
                        out), out
    ((message, envelope, ids),) = smtpd.items()
    assert envelope == b"Fa@x\0Tb@host.example.com\0\0"
    assert message.startswith(b"Received: from peer.test (HELO client) (joe@192.0.2.9)\n"
                              b"  by 192.0.2.1 with SMTP; ")
    assert message.endswith(b" -0000\nSubject: x\n\nhi\n")
    qp = int(out.split(b" qp ")[1].split(b"\r\n")[0])
    assert ids == b"%d %d %s" % (uid("qmaild"), gid("nofiles"), smtpd.home.encode())
    assert qp > 0


def test_smtpgreeting_and_eof(smtpd):
    smtpd.control(b"smtpgreeting", b"greet.example two words \t\nsecond line\n")
    code, out = smtpd.run(b"EHLO x\r\nNOOP")
    assert (code, out) == (1, b"220 greet.example two words ESMTP\r\n250-greet.example two words\r\n"
                              b"250-PIPELINING\r\n250 8BITMIME\r\n")


@pytest.mark.parametrize("setup", ["no me", "unreadable rcpthosts", "unreadable me",
                                   "morercpthosts.cdb unreadable"])
def test_unable_to_read_controls(smtpd, setup):
    if setup == "no me":
        smtpd.control(b"me", None)
    elif setup == "unreadable rcpthosts":
        os.chmod(os.path.join(smtpd.home, "control", "rcpthosts"), 0o600)
    elif setup == "unreadable me":
        smtpd.control(b"smtpgreeting", b"g\n")
        os.chmod(os.path.join(smtpd.home, "control", "me"), 0o600)
    else:
        smtpd.control(b"morercpthosts.cdb", b"")
        os.chmod(os.path.join(smtpd.home, "control", "morercpthosts.cdb"), 0o600)
    assert smtpd.run(b"QUIT\r\n") == (1, b"421 unable to read controls (#4.3.0)\r\n")


def test_databytes_control_and_env(smtpd):
    big = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\n123456\r\n.\r\nQUIT\r\n"
    toobig = b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
    smtpd.control(b"databytes", b"6\n")
    code, out = smtpd.run(big)
    assert toobig in out and code == 0
    code, out = smtpd.run(big, env={"DATABYTES": "7"})
    assert toobig not in out and b"250 ok " in out
    code, out = smtpd.run(big, env={"DATABYTES": "junk"})   # non-numeric: unlimited
    assert toobig not in out
    assert len(smtpd.items()) == 2


def test_timeoutsmtpd(smtpd):
    smtpd.control(b"timeoutsmtpd", b"1\n")
    p = subprocess.Popen([smtpd.program()], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         env=smtpd.env, user=uid("qmaild"), group=gid("nofiles"), extra_groups=[])
    try:
        p.stdin.write(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\nhalf a mess")
        p.stdin.flush()
        out = p.stdout.read()
        assert p.wait(20) == 1
    finally:
        p.stdin.close()
        p.kill()
        p.wait()
    assert out.endswith(b"354 go ahead\r\n451 timeout (#4.4.2)\r\n")
    assert smtpd.items() == []
    assert len(smtpd.items("incomplete")) == 1


@pytest.mark.parametrize("value", [b"2147484", b"2147483647", b"4294967295"])
def test_huge_timeoutsmtpd(smtpd, value):
    """qmail's select() takes any positive int of seconds (4294967295 is -1 as
    an int, so 1); poll()'s millisecond int must not overflow."""
    smtpd.control(b"timeoutsmtpd", value + b"\n")
    assert smtpd.run(b"NOOP\r\nQUIT\r\n") == (
        0, b"220 host.example.com ESMTP\r\n250 ok\r\n221 host.example.com\r\n")


def test_queue_exit_codes(smtpd):
    data = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\nx\r\n.\r\n"
    for code, reply in [(53, b"451 qq write error or disk full (#4.3.0)\r\n"),
                        (31, b"554 mail server permanently rejected message (#5.3.0)\r\n"),
                        (11, b"554 envelope address too long for qq (#5.1.3)\r\n"),
                        (20, b"554 qq permanent problem (#5.3.0)\r\n"),
                        (99, b"451 qq temporary problem (#4.3.0)\r\n")]:
        with open(os.path.join(smtpd.captured, "exitcode"), "w") as f:
            f.write(str(code))
        assert smtpd.run(data)[1].endswith(b"354 go ahead\r\n" + reply)


def test_relative_qmailqueue_and_missing_program(smtpd):
    data = b"MAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\nx\r\n.\r\n"
    shutil.copy(smtpd.capture, os.path.join(smtpd.home, "bin", "capture"))
    code, out = smtpd.run(data, env={"QMAILQUEUE": "bin/capture"})
    assert re.search(rb"\r\n250 ok \d+ qp \d+\r\n$", out)
    code, out = smtpd.run(data, env={"QMAILQUEUE": "bin/nonexistent"})
    assert out.endswith(b"354 go ahead\r\n451 unable to exec qq (#4.3.0)\r\n")


def test_qq_waitpid_surprise(smtpd):
    """SIGCHLD ignored by whoever started qmail-smtpd: qmail-queue is reaped by
    the kernel, wait fails, and qmail.c says so; the session goes on."""
    done = subprocess.run([smtpd.program()], capture_output=True, env=smtpd.env, user=uid("qmaild"),
                          group=gid("nofiles"), extra_groups=[],
                          preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN),
                          input=b"MAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\nx\r\n.\r\n"
                                b"QUIT\r\n")
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.endswith(b"354 go ahead\r\n451 qq waitpid surprise (#4.3.0)\r\n"
                                b"221 host.example.com\r\n")


@pytest.mark.parametrize("failing", ["fork", "second pipe"])
def test_qqt_failure_leaves_no_descriptors(monkeypatch, failing):
    """qmail_open() closes every pipe end it made when it cannot start
    qmail-queue, so repeated `451 qqt failure` cannot use up the fds."""
    from pyqmail import errors, qmail
    if failing == "fork":
        def fork():
            raise BlockingIOError(11, "Resource temporarily unavailable")
        monkeypatch.setattr(os, "fork", fork)
    else:
        real_pipe, calls = os.pipe, []

        def pipe():
            calls.append(1)
            if len(calls) == 2:
                raise OSError(24, "Too many open files")
            return real_pipe()
        monkeypatch.setattr(os, "pipe", pipe)
    before = sorted(os.listdir("/proc/self/fd"))
    qq = qmail.Qmail(b"/nonexistent", {b"QMAILQUEUE": b"/bin/true"})
    with pytest.raises((errors.Failure, OSError)):
        qq.open()
    assert sorted(os.listdir("/proc/self/fd")) == before


WARM_UP_SCRIPT = """
import os, sys
sys.path[:0] = [%r, %r]
from pyqmail import qmail_smtpd
home = %r
commands, client = os.pipe()
os.write(client, qmail_smtpd.WARM_UP)
os.close(client)
replies, answer = os.pipe()
code = qmail_smtpd.warm_up_session({b"TCPREMOTEIP": b"127.0.0.1", b"TCPLOCALIP": b"127.0.0.1"},
                                   home, commands, answer)
os.close(answer)
sys.stdout.buffer.write(b"%%d\\n" %% code + os.read(replies, 65536))
before = sorted(os.listdir(b"/proc/self/fd"))
qmail_smtpd.warm_up({b"QMAILQUEUE": b"/bin/false"}, home)
assert sorted(os.listdir(b"/proc/self/fd")) == before
assert os.getcwd() == home.decode()
"""


def test_warm_up_session(smtpd):
    """qmail-tcpsrv's warm-up runs the whole conversation, the queue client's
    code included (its service a socket pair answering qp 0, exit 0), and keeps
    nothing: no message anywhere, QMAILQUEUE not run, no descriptor left."""
    from conftest import DEPS, SRC
    script = WARM_UP_SCRIPT % (SRC, DEPS, smtpd.home.encode())
    done = subprocess.run([PYTHON, "-IS", "-c", script], capture_output=True, cwd="/",
                          user=uid("qmaild"), group=gid("nofiles"), extra_groups=[], timeout=30)
    assert done.stderr == b""
    assert re.fullmatch(
        rb"0\n220 host.example.com ESMTP\r\n250 host.example.com\r\n"
        rb"250-host.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n250 ok\r\n250 ok\r\n"
        rb"553 sorry, that domain isn't in my list of allowed rcpthosts \(#5.7.1\)\r\n"
        rb"250 ok\r\n354 go ahead\r\n250 ok \d+ qp 0\r\n250 flushed\r\n221 host.example.com\r\n",
        done.stdout), done.stdout
    assert os.listdir(smtpd.captured) == []
    for sub in ("todo", "intd", "pid", "mess/0"):
        assert os.listdir(os.path.join(smtpd.home, "queue", sub)) == []


def test_no_queue_service(smtpd):
    """Without QMAILQUEUE the queue service is asked; when it is not running the
    message is refused temporarily, as qmail-queue's exit 73."""
    env = dict(smtpd.env)
    del env["QMAILQUEUE"]
    done = subprocess.run([smtpd.program()], capture_output=True, env=env, user=uid("qmaild"),
                          group=gid("nofiles"), extra_groups=[],
                          input=b"MAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\nx\r\n.\r\n")
    assert done.stdout.endswith(b"354 go ahead\r\n451 connection to mail server rejected (#4.4.1)\r\n")


def test_morercpthosts_cdb(smtpd):
    smtpd.control(b"morercpthosts", b"More.Example\n.deep.example\n")
    assert subprocess.run([smtpd.program("qmail-newmrh")]).returncode == 0
    code, out = smtpd.run(b"MAIL FROM:<a@x>\r\nRCPT TO:<a@more.example>\r\nRCPT TO:<a@x.deep.example>\r\n"
                          b"RCPT TO:<a@deep.example>\r\nRCPT TO:<a@host.example.com>\r\n")
    assert out.split(b"\r\n")[1:6] == [b"250 ok", b"250 ok", b"250 ok",
                                       b"553 sorry, that domain isn't in my list of allowed "
                                       b"rcpthosts (#5.7.1)", b"250 ok"]
    smtpd.control(b"rcpthosts", None)   # morercpthosts alone is ignored
    code, out = smtpd.run(b"MAIL FROM:<a@x>\r\nRCPT TO:<a@deep.example>\r\n")
    assert out.endswith(b"250 ok\r\n250 ok\r\n")


def test_badmailfrom_and_localiphost(smtpd):
    smtpd.control(b"badmailfrom", b"# comment\nspam@evil.test\n@bad.test\n")
    smtpd.control(b"localiphost", b"host.example.com\n")
    code, out = smtpd.run(b"MAIL FROM:<x@BAD.test>\r\nRCPT TO:<a@host.example.com>\r\n"
                          b"MAIL FROM:<ok@x>\r\nRCPT TO:<a@[127.0.0.1]>\r\nDATA\r\n.\r\n")
    assert out.split(b"\r\n")[1:6] == [
        b"250 ok", b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)",
        b"250 ok", b"250 ok", b"354 go ahead"]
    ((message, envelope, ids),) = smtpd.items()
    assert envelope == b"Fok@x\0Ta@host.example.com\0\0"


def test_imports_and_start_time(qmail_home):
    """Exec'd once per connection: only small modules, and a quick start."""
    lib = os.path.join(qmail_home, "lib", "python")
    code = ("import sys; sys.path.insert(0, %r); import pyqmail.qmail_smtpd; "
            "print(' '.join(sorted(sys.modules)))" % lib)
    names = subprocess.run([PYTHON, "-I", "-S", "-c", code], capture_output=True,
                           check=True).stdout.decode().split()
    for heavy in ("dns", "email", "logging", "argparse", "socket", "re", "typing", "dataclasses",
                  "smtplib", "subprocess"):
        assert heavy not in names, heavy

    def best(argv, data):
        times = []
        for _ in range(5):
            start = time.monotonic()
            subprocess.run(argv, input=data, capture_output=True, check=False)
            times.append(time.monotonic() - start)
        return min(times)
    bare = best([PYTHON, "-I", "-S", "-c", "pass"], b"")
    smtpd = best([os.path.join(qmail_home, "bin", "qmail-smtpd")], b"QUIT\r\n")
    print("python3 -I -S -c pass: %.1f ms; qmail-smtpd greeting+QUIT: %.1f ms"
          % (bare * 1000, smtpd * 1000))
    assert smtpd < bare + 0.1


SESSION_MODULES = """
import os, sys
sys.path.insert(0, %r)
from pyqmail import qmail_smtpd
r, w = os.pipe()
os.write(w, b"HELO x\\r\\nMAIL FROM:<a@x>\\r\\nRCPT TO:<%s>\\r\\nDATA\\r\\nSubject: s\\r\\n\\r\\nhi\\r\\n.\\r\\nQUIT\\r\\n")
os.close(w)
replies, answer = os.pipe()
code = qmail_smtpd.run({b"TCPREMOTEIP": b"127.0.0.1", b"TCPLOCALIP": b"127.0.0.1"}, %r, r, answer)
os.close(answer)
sys.stdout.buffer.write(b"%%d\\n" %% code + os.read(replies, 65536) + b"\\nMODULES "
                        + b" ".join(sorted(n.encode() for n in sys.modules)))
"""


@pytest.mark.parametrize("more", [False, True])
def test_queueing_imports_only_small_modules(smtpd, more):
    """An exec'd qmail-smtpd queues through the service with _socket alone
    (socket.py's enum classes cost 5 ms per message), and reads its cdb module
    only where control/morercpthosts.cdb exists."""
    from queueutil import QueueService, queue_files
    if more:
        smtpd.control(b"morercpthosts", b"more.example.com\n")
        done = subprocess.run([smtpd.program("qmail-newmrh")], cwd=smtpd.home, capture_output=True)
        assert done.returncode == 0, done.stderr
    rcpt = b"b@more.example.com" if more else b"b@host.example.com"
    service = QueueService(smtpd.home).start()
    try:
        lib = os.path.join(smtpd.home, "lib", "python")
        script = SESSION_MODULES % (lib, rcpt.decode(), smtpd.home.encode())
        done = subprocess.run([PYTHON, "-I", "-S", "-c", script], capture_output=True, cwd="/",
                              user=uid("qmaild"), group=gid("nofiles"), extra_groups=[], timeout=30)
        assert done.stderr == b""
        out, _, modules = done.stdout.partition(b"\nMODULES ")
        code, _, replies = out.partition(b"\n")
        modules = modules.split()
        assert code == b"0"
        assert re.search(rb"\r\n250 ok \d+ qp \d+\r\n221 host.example.com\r\n$", replies), replies
        assert b"_socket" in modules and b"socket" not in modules and b"array" not in modules
        assert (b"cdblib" in modules) == more
        assert len(queue_files(smtpd.home)["todo"]) == 1
    finally:
        service.stop()


# ---- under tcpserver

def test_smtplib_round_trip(smtpd):
    """A message with leading-dot lines, 8-bit bytes and a 998-byte line comes
    out of the queue exactly as sent (CRLF -> LF)."""
    smtpd.start()
    body = (b"From: a@x\r\nSubject: round trip\r\n\r\n.leading dot\r\n..two dots\r\n.\r\n"
            b"\xe9\xe8\xff\x80 8-bit\r\n" + b"L" * 998 + b"\r\nend\r\n")
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=20) as client:
        code, text = client.ehlo("client.test")
        assert (code, text) == (250, b"host.example.com\nPIPELINING\n8BITMIME")
        assert client.has_extn("pipelining") and client.has_extn("8bitmime")
        refused = client.sendmail("a@x", ["b@host.example.com", "c@y.sub.example.com"], body)
        assert refused == {}
        code, text = client.noop()
        assert (code, text) == (250, b"ok")
    ((message, envelope, ids),) = smtpd.items()
    assert envelope == b"Fa@x\0Tb@host.example.com\0Tc@y.sub.example.com\0\0"
    rest = check_received(message, helo=b"client.test")
    assert rest == body.replace(b"\r\n", b"\n")
    assert ids.split()[:2] == [b"%d" % uid("qmaild"), b"%d" % gid("nofiles")]


def test_relaying_by_tcprules(smtpd):
    smtpd.start()
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=20) as client:
        client.ehlo("x")
        client.mail("a@x")
        assert client.rcpt("b@elsewhere.test") == (
            553, b"sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=20, source_address=("127.0.0.2", 0)) as client:
        client.ehlo("relay.test")
        assert client.sendmail("a@x", ["b@elsewhere.test"], b"Subject: relay\r\n\r\nok\r\n") == {}
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=20, source_address=("127.0.0.3", 0)) as client:
        client.ehlo("x")
        client.mail("a@x")
        assert client.rcpt("b@elsewhere.test") == (250, b"ok")
        client.data(b"12345")
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=20, source_address=("127.0.0.3", 0)) as client:
        with pytest.raises(smtplib.SMTPDataError) as e:
            client.sendmail("a@x", ["b@elsewhere.test"], b"123456")
        assert e.value.smtp_code == 552
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=20, source_address=("127.0.0.4", 0)):
            pass
    items = smtpd.items()
    assert sorted(envelope for _, envelope, _ in items) == [
        b"Fa@x\0Tb@elsewhere.test\0\0", b"Fa@x\0Tb@elsewhere.test@r\0\0"]
    for message, _, _ in items:
        check_received(message, helo=b"x" if b"12345" in message else b"relay.test",
                       remoteip=b"127.0.0.3" if b"12345" in message else b"127.0.0.2")


def test_swaks_pipelined(smtpd):
    smtpd.start()
    done = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(smtpd.port),
                           "--from", "swaks@x.test", "--to", "b@host.example.com",
                           "--helo", "swaks.test", "--pipeline", "--body", "swaks body",
                           "--header", "Subject: swaks"],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"<** " not in done.stdout
    assert re.search(rb"250 ok \d+ qp \d+", done.stdout), done.stdout
    ((message, envelope, ids),) = smtpd.items()
    assert envelope == b"Fswaks@x.test\0Tb@host.example.com\0\0"
    rest = check_received(message, helo=b"swaks.test")
    assert b"Subject: swaks\n" in rest and b"\n\nswaks body\n" in rest


def test_whole_transaction_in_one_write(smtpd):
    smtpd.start()
    s = smtpd.connect()
    with s:
        greeting, buf = read_reply(s)
        assert greeting == b"220 host.example.com ESMTP\r\n"
        s.sendall(b"EHLO one.write\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\n"
                  b"RCPT TO:<nobody@elsewhere.test>\r\nDATA\r\nSubject: one\r\n\r\n..dot\r\n"
                  b"bare\rcr\r\n.\r\nMAIL FROM:<c@x>\r\nRCPT TO:<d@host.example.com>\r\nDATA\r\n"
                  b"second\r\n.\r\nQUIT\r\n")
        out = buf + read_until_closed(s)
    assert re.fullmatch(
        rb"250-host.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n250 ok\r\n250 ok\r\n"
        rb"553 sorry, that domain isn't in my list of allowed rcpthosts \(#5.7.1\)\r\n"
        rb"354 go ahead\r\n250 ok \d+ qp \d+\r\n250 ok\r\n250 ok\r\n354 go ahead\r\n"
        rb"250 ok \d+ qp \d+\r\n221 host.example.com\r\n", out), out
    items = smtpd.items()
    bodies = sorted(check_received(m, helo=b"one.write") for m, _, _ in items)
    assert bodies == [b"Subject: one\n\n.dot\nbare\rcr\n", b"second\n"]


@pytest.mark.parametrize("variant", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r\n.\n",
                                     b"\r.\n", b"\r.\r\n", b"\n.\r"])
def test_smuggling_over_tcp(smtpd, variant):
    smtpd.start()
    s = smtpd.connect()
    with s:
        read_reply(s)
        s.sendall(b"HELO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\n"
                  b"Subject: first\r\n\r\nbody" + variant +
                  b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@host.example.com>\r\nDATA\r\n"
                  b"Subject: smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n")
        out = read_until_closed(s)
    if b"\n" in variant.replace(b"\r\n", b""):
        assert out.endswith(b"354 go ahead\r\n451 See http://pobox.com/~djb/docs/smtplf.html.\r\n")
        wait_for(lambda: len(smtpd.items("incomplete")) == 1)
        assert smtpd.items() == []
    else:
        assert re.search(rb"354 go ahead\r\n250 ok \d+ qp \d+\r\n221 host.example.com\r\n$", out)
        ((message, envelope, ids),) = smtpd.items()
        assert envelope == b"Fa@x\0Tb@host.example.com\0\0"
        assert b"smuggled" in message


def test_client_vanishes_mid_data(smtpd):
    smtpd.start()
    s = smtpd.connect()
    with s:
        read_reply(s)
        s.sendall(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\nSubject: x\r\n\r\nhalf")
        out = b""
        while not out.endswith(b"354 go ahead\r\n"):
            out += s.recv(4096)
        assert out == b"250 ok\r\n250 ok\r\n354 go ahead\r\n"
    wait_for(lambda: len(smtpd.items("incomplete")) == 1)
    assert smtpd.items() == []


def test_silent_client_and_nul_bytes(smtpd):
    smtpd.control(b"timeoutsmtpd", b"1\n")
    smtpd.start()
    with smtpd.connect() as s:
        assert read_until_closed(s) == b"220 host.example.com ESMTP\r\n451 timeout (#4.4.2)\r\n"
    smtpd.control(b"timeoutsmtpd", b"20\n")
    with smtpd.connect() as s:
        read_reply(s)
        s.sendall(b"NO\0OP\r\nNOOP\0x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@host.example.com>\r\nDATA\r\n"
                  b"a\0b\r\n.\r\nQUIT\r\n")
        out = read_until_closed(s)
    assert out.startswith(b"502 unimplemented (#5.5.1)\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go ahead\r\n")
    ((message, envelope, ids),) = smtpd.items()
    assert message.endswith(b"-0000\na\0b\n")


def test_overlong_command_line(smtpd):
    smtpd.start()
    with smtpd.connect() as s:
        read_reply(s)
        # exactly one byte past the bound (and its CR): the server reads all of
        # it, so its close is an orderly one and the reply arrives
        s.sendall(b"NOOP " + b"x" * (65536 + 2 - 5))
        assert read_until_closed(s) == b"421 out of memory (#4.3.0)\r\n"


def test_through_the_queue_service(smtpd):
    """No QMAILQUEUE: the message goes through qmail-queued into the real queue,
    and the qp in `250 ok` is the number in qmail-queue's Received line."""
    from queueutil import QueueService, queue_files, read
    del smtpd.env["QMAILQUEUE"]
    service = QueueService(smtpd.home).start()
    try:
        smtpd.start()
        body = b"Subject: queued\r\n\r\n..dot\r\n\xe9\r\n"
        with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=20) as client:
            client.ehlo("svc.test")
            client.mail("a@x")
            client.rcpt("b@host.example.com")
            code, text = client.data(body)
        assert code == 250
        qp = int(re.fullmatch(rb"ok \d+ qp (\d+)", text).group(1))
        files = queue_files(smtpd.home)
        (mess,) = files["mess"]
        message = read(os.path.join(smtpd.home, "queue", "mess", mess))
        first, rest = message.split(b"\n", 1)
        assert re.fullmatch(rb"Received: \(qmail %d invoked from network\); \d+ \w+ \d+ "
                            rb"\d\d:\d\d:\d\d -0000" % qp, first), first
        assert check_received(rest, helo=b"svc.test") == b"Subject: queued\n\n..dot\n\xe9\n"  # smtplib stuffs
        inode = mess.split("/")[1]
        todo = read(os.path.join(smtpd.home, "queue", "todo", inode))
        assert todo.startswith(b"u%d\0p" % uid("qmaild"))
        assert todo.endswith(b"\0Fa@x\0Tb@host.example.com\0")
    finally:
        smtpd.stop()
        service.stop()
