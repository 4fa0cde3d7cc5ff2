"""splogger: each line to syslog with qmail's stamp, priority and folding
(spec/start-and-logs.md §2).  The test is the syslog daemon: splogger runs in a
mount namespace whose /dev/log is the test's own datagram socket."""
import os
import re
import socket
import subprocess

from conftest import need_root, public_tmpdir, uid


def run_splogger(home, data: bytes, *args: str) -> list[bytes]:
    need_root()
    base = public_tmpdir("pyqmail-syslog-")
    path = os.path.join(base, "log")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    os.chmod(path, 0o666)
    receiver.settimeout(5)
    script = ('mount -t tmpfs tmpfs /dev && mknod -m 666 /dev/null c 1 3 && ln -s "$1" /dev/log'
              ' && shift && exec setpriv --reuid=qmaill --regid=nofiles --clear-groups "$@"')
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", path,
                           os.path.join(home, "bin", "splogger"), *args],
                          input=data, capture_output=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    out = []
    receiver.setblocking(False)
    while True:
        try:
            out.append(receiver.recv(65536))
        except BlockingIOError:
            break
    receiver.close()
    return out


def parse(message: bytes):
    """(priority, tag, stamp, sep, text) of an RFC 3164 message from glibc."""
    m = re.fullmatch(rb"<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d ([^:]+): (\d+\.\d{6})([ +])(.*)", message, re.S)
    assert m, message
    return int(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5)


def test_priorities_tag_and_mail_facility(qmail_home):
    got = [parse(m) for m in run_splogger(
        qmail_home, b"status: local 0/10 remote 0/20\n\nalert: oh no\nwarning: hmm\nx alert:\n", "qmail")]
    mail = 2 << 3
    assert [(p, tag, sep, text) for p, tag, stamp, sep, text in got] == [
        (mail | 6, b"qmail", b" ", b"status: local 0/10 remote 0/20"),
        (mail | 1, b"qmail", b" ", b"alert: oh no"),
        (mail | 4, b"qmail", b" ", b"warning: hmm"),
        (mail | 6, b"qmail", b" ", b"x alert:")]


def test_facility_folding_and_unprintables(qmail_home):
    line = b"warning: " + b"a\tb\xff" * 300 + b"\n"       # 1209 bytes before LF
    got = [parse(m) for m in run_splogger(qmail_home, line + b"unterminated", "smtpd", "3")]
    assert len(got) == 2
    (p1, tag, s1, sep1, t1), (p2, _, s2, sep2, t2) = got
    assert tag == b"smtpd" and p1 == p2 == (3 << 3) | 4 and s1 == s2
    assert (sep1, sep2) == (b" ", b"+")
    assert t1 + t2 == line[:-1].replace(b"\t", b"?").replace(b"\xff", b"?")
    assert len(t1) == 799


def test_default_tag_and_non_numeric_facility(qmail_home):
    (p, tag, stamp, sep, text), = [parse(m) for m in run_splogger(qmail_home, b"hi\n")]
    assert (p, tag, text) == ((2 << 3) | 6, b"splogger", b"hi")
    (p, tag, stamp, sep, text), = [parse(m) for m in run_splogger(qmail_home, b"hi\n", "t", "local0")]
    assert p == 6  # non-numeric facility counts as 0 (kern)
