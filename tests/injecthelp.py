"""Helpers for the qmail-inject family's tests: an installation with control/me
and a QMAILQUEUE capture script saving fd 0 and fd 1, and a runner."""
import os
import pwd
import re
import shutil
import subprocess
import time

from conftest import install, need_root, public_tmpdir

ME = b"host.example.com"


def write(path, data, mode=0o644):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


HEAD = b"Date: d\nMessage-ID: <m@x>\nFrom: f@x.y\n"

CAPTURE = b"""#!/bin/sh
env > "$CAPDIR/environ"
cat > "$CAPDIR/msg" || exit 54
cat 0<&1 > "$CAPDIR/env" || exit 54
exit ${CAPEXIT:-0}
"""


class Home:
    """An installation with control/me and a QMAILQUEUE capture script."""

    def __init__(self, base):
        self.base = base
        self.home = os.path.join(base, "qmail")
        done = install(self.home)
        assert done.returncode == 0, done.stderr.decode()
        write(os.path.join(self.home, "control", "me"), ME + b"\n")
        self.capture = os.path.join(base, "capture")
        write(self.capture, CAPTURE, 0o755)
        self.capdir = os.path.join(base, "cap")
        os.mkdir(self.capdir)
        os.chmod(self.capdir, 0o777)

    def bin(self, name):
        return os.path.join(self.home, "bin", name)

    def control(self, name, data):
        path = os.path.join(self.home, "control", name)
        if data is None:
            if os.path.exists(path):
                os.unlink(path)
        else:
            write(path, data)

    def clear(self):
        for name in ("msg", "env", "environ"):
            path = os.path.join(self.capdir, name)
            if os.path.exists(path):
                os.unlink(path)

    def captured(self):
        out = []
        for name in ("msg", "env"):
            path = os.path.join(self.capdir, name)
            if not os.path.exists(path):
                out.append(None)
                continue
            with open(path, "rb") as f:
                out.append(f.read())
        return out


def module_home():
    """A module's own installation (a generator for a module-scoped fixture)."""
    need_root()
    base = public_tmpdir("pyqmail-inject-")
    h = Home(base)
    yield h
    shutil.rmtree(base, ignore_errors=True)


def base_env(**extra):
    env = {"PATH": "/usr/bin:/bin", "USER": "me"}
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def drop_to(name):
    pw = pwd.getpwnam(name)

    def preexec():
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return preexec


class Result:
    def __init__(self, code, out, err, pid, start, end):
        self.code, self.out, self.err, self.pid = code, out, err, pid
        self.start, self.end = start, end


def run(home, data, *args, env=None, user=None, queue=False, capexit=None, program="qmail-inject"):
    env = dict(env if env is not None else base_env())
    if queue:
        home.clear()
        env["QMAILQUEUE"] = home.capture
        env["CAPDIR"] = home.capdir
        if capexit is not None:
            env["CAPEXIT"] = str(capexit)
    start = int(time.time())
    p = subprocess.Popen([home.bin(program), *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                         preexec_fn=drop_to(user) if user else None, cwd="/")
    out, err = p.communicate(data, timeout=60)
    return Result(p.returncode, out, err, p.pid, start, int(time.time()))


def shell_env(out):
    """`env` output of a fake program, without what /bin/sh itself sets."""
    return sorted(line for line in out.split(b"\n")[:-1]
                  if line.split(b"=", 1)[0] not in (b"PWD", b"OLDPWD", b"SHLVL", b"_"))


def generated(r, text, pid=None):
    """The Date/Message-ID qmail-inject made (start time, pid), checked and
    substituted by fixed strings so the rest can be compared byte for byte."""
    m = re.search(rb"Date: (\d+) (\w\w\w) (\d{4}) (\d\d):(\d\d):(\d\d) -0000\n", text)
    assert m, text
    stamp = None
    for t in range(r.start, r.end + 1):
        g = time.gmtime(t)
        date = b"Date: %d %s %d %02d:%02d:%02d -0000\n" % (
            g.tm_mday, time.strftime("%b", g).encode(), g.tm_year, g.tm_hour, g.tm_min, g.tm_sec)
        if date == m.group(0):
            stamp = t
    assert stamp is not None, m.group(0)
    g = time.gmtime(stamp)
    msgid = b"%d%02d%02d%02d%02d%02d.%d.qmail@" % (g.tm_year, g.tm_mon, g.tm_mday, g.tm_hour,
                                                  g.tm_min, g.tm_sec, r.pid if pid is None else pid)
    text = text.replace(m.group(0), b"Date: DATE\n")
    return text.replace(msgid, b"ID.qmail@"), stamp
