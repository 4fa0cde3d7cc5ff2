"""Helpers for the SMTP tests: an installation configured for qmail-smtpd with a
capture program as QMAILQUEUE, started under the real tcpserver or qmail-tcpsrv."""
import calendar
import grp
import os
import random
import re
import socket
import subprocess
import time

import pytest

from conftest import PYTHON, uid, wait_for

ME = b"host.example.com"
RECEIVED_RE = re.compile(
    rb"Received: from (\S+) (\(HELO [^)]*\) )?\(([^)]*)\)\n  by (\S+) with SMTP; "
    rb"(\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) "
    rb"(\d\d):(\d\d):(\d\d) -0000\n")

CAPTURE = """#!%s -IS
# A stand-in for qmail-queue: read fd 0 (message) and fd 1 (envelope) as it does;
# keep them only when the envelope is complete (qmail-queue would queue it).
import os, sys
out = %r
def read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
message = read_all(0)
envelope = read_all(1)
name = str(os.getpid())
ids = b"%%d %%d %%s" %% (os.getuid(), os.getgid(), os.getcwd().encode())
complete = envelope.startswith(b"F") and envelope.endswith(b"\\0\\0") and b"\\0T" in envelope
kind = "queued" if complete else "incomplete"
environ = b"".join(k + b"=" + v + b"\\0" for k, v in sorted(os.environb.items()))
for suffix, data in (("environ", environ), ("msg", message), ("env", envelope), ("ids", ids)):
    with open(os.path.join(out, "%%s.%%s.%%s.tmp" %% (kind, name, suffix)), "wb") as f:
        f.write(data)
    os.rename(os.path.join(out, "%%s.%%s.%%s.tmp" %% (kind, name, suffix)),
              os.path.join(out, "%%s.%%s.%%s" %% (kind, name, suffix)))
code = 54
if complete:
    try:
        with open(os.path.join(out, "exitcode"), "rb") as f:
            code = int(f.read())
    except FileNotFoundError:
        code = 0
sys.exit(code)
"""


class Smtpd:
    """One installation configured for SMTP, with a capture queue."""

    def __init__(self, home):
        self.home = home
        self.base = os.path.dirname(home)
        self.captured = os.path.join(self.base, "captured")
        os.mkdir(self.captured)
        os.chown(self.captured, uid("qmaild"), -1)
        os.chmod(self.captured, 0o700)
        self.capture = os.path.join(self.base, "capture-queue")
        with open(self.capture, "w") as f:
            f.write(CAPTURE % (PYTHON, self.captured))
        os.chmod(self.capture, 0o755)
        self.control(b"me", ME + b"\n")
        self.control(b"rcpthosts", ME + b"\n.sub.example.com\n")
        self.env = {"PATH": "/usr/bin:/bin", "QMAILQUEUE": self.capture}
        self.server = None
        self.port = None

    def control(self, name, data):
        path = os.path.join(self.home, "control", os.fsdecode(name))
        if data is None:
            os.unlink(path)
            return
        with open(path, "wb") as f:
            f.write(data)

    def program(self, name="qmail-smtpd"):
        return os.path.join(self.home, "bin", name)

    def run(self, data, env=None, timeout=30):
        """qmail-smtpd on pipes, as qmaild: (exit code, output)."""
        e = dict(self.env)
        e.update(env or {})
        done = subprocess.run([self.program()], input=data, capture_output=True, env=e,
                              user=uid("qmaild"), group=gid("nofiles"), extra_groups=[],
                              timeout=timeout)
        assert done.stderr == b""
        return done.returncode, done.stdout

    def items(self, kind="queued"):
        out = []
        for name in sorted(os.listdir(self.captured)):
            if name.startswith(kind + ".") and name.endswith(".msg"):
                stem = os.path.join(self.captured, name[:-4])
                if not os.path.exists(stem + ".ids"):
                    continue  # the capture script writes .ids last: not finished yet
                with open(stem + ".msg", "rb") as f:
                    message = f.read()
                with open(stem + ".env", "rb") as f:
                    envelope = f.read()
                with open(stem + ".ids", "rb") as f:
                    ids = f.read()
                out.append((message, envelope, ids))
        return out

    def tcprules(self, rules):
        cdb = os.path.join(self.home, "control", "tcp.smtp.cdb")
        done = subprocess.run(["tcprules", cdb, cdb + ".tmp"], input=rules, capture_output=True)
        assert done.returncode == 0, done.stderr
        return cdb

    DEFAULT_RULES = (b'127.0.0.2:allow,RELAYCLIENT=""\n'
                     b'127.0.0.3:allow,DATABYTES="6",RELAYCLIENT="@r"\n'
                     b"127.0.0.4:deny\n:allow\n")

    def start(self, *options, server="tcpserver", ports=(25000, 26000), host="127.0.0.1",
              program=None, rules=DEFAULT_RULES, check=True, localname=ME.decode(), cwd=None):
        """The real tcpserver (or pyqmail's qmail-tcpsrv) on a free port of
        range(*ports) at host, running program (default qmail-smtpd) as
        qmaild:nofiles under the rules given (text for the real tcprules);
        its stderr goes to self.log_path.  Given a cwd, the listener starts
        there and -x names the rules relative to it.  server may also be the
        command (a list) that starts the listener."""
        cdb = self.tcprules(rules)
        if cwd is not None:
            cdb = os.path.relpath(cdb, cwd)
        if server == "tcpserver":
            command = ["tcpserver"]
        elif server == "qmail-tcpsrv":
            command = [self.program("qmail-tcpsrv")]
        else:
            command = list(server)
        listener = command[-1]
        family = socket.AF_INET6 if ":" in host or host == "0" else socket.AF_INET
        probe = "::" if host == "0" else host
        candidates = list(range(*ports))
        random.shuffle(candidates)
        self.log_path = os.path.join(self.base, "log.%s" % os.path.basename(listener))
        for port in candidates[:20]:
            with socket.socket(family) as s:
                try:
                    s.bind((probe, port))
                except OSError:
                    continue
            argv = [*command, "-v", "-R", "-H", *(["-l", localname] if localname else []), "-x", cdb,
                    "-u", str(uid("qmaild")), "-g", str(gid("nofiles")), *options,
                    host, str(port), *(program or [self.program()])]
            with open(self.log_path, "wb") as log:
                self.server = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL,
                                               stderr=log, cwd=cwd)
            self.port = port
            self.host = "127.0.0.1" if host == "0" else host

            def up():
                return self.server.poll() is not None or b"status: 0/" in self.log()
            wait_for(up)
            if self.server.poll() is None or not check:
                return port
        pytest.fail("no free port for %s" % listener)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read()

    def stop(self):
        if self.server is not None:
            if self.server.poll() is None:
                self.server.terminate()
            self.server.wait(10)
            self.server = None

    def connect(self, source=None, host=None):
        host = host or self.host
        if source is None:
            source = "::1" if ":" in host else "127.0.0.1"
        return socket.create_connection((host, self.port), timeout=20, source_address=(source, 0))

    def environs(self):
        """The environments the capture program ran with, one dict per message."""
        out = []
        for name in sorted(os.listdir(self.captured)):
            if name.endswith(".environ"):
                with open(os.path.join(self.captured, name), "rb") as f:
                    out.append(dict(e.split(b"=", 1) for e in f.read().split(b"\0") if e))
        return out


def gid(name):
    return grp.getgrnam(name).gr_gid


def read_reply(s, buf=b""):
    """One whole (possibly multi-line) reply from a socket."""
    while True:
        lines = buf.split(b"\r\n")
        for i, line in enumerate(lines[:-1]):
            if line[3:4] != b"-":
                end = len(b"\r\n".join(lines[:i + 1])) + 2
                return buf[:end], buf[end:]
        chunk = s.recv(65536)
        if not chunk:
            return buf, b""
        buf += chunk


def read_until_closed(s):
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def check_received(message, remotehost=b"unknown", helo=None, remoteip=b"127.0.0.1"):
    m = RECEIVED_RE.match(message)
    assert m, message[:200]
    assert m.group(1) == remotehost
    assert m.group(2) == (None if helo is None else b"(HELO " + helo + b") ")
    assert m.group(3) == remoteip
    assert m.group(4) == ME
    when = time.strptime(b" ".join(m.group(i) for i in range(5, 11)).decode(), "%d %b %Y %H %M %S")
    assert abs(calendar.timegm(when) - time.time()) < 120
    assert not m.group(5).startswith(b"0")
    return message[m.end():]
