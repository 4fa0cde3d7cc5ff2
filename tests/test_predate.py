"""predate, datemail, mailsubj (spec/inject.md §7): the installed programs."""
import re
import shutil
import subprocess
import time

import pytest

from conftest import need_root, public_tmpdir
from injecthelp import HEAD, Home, base_env, generated, module_home, run, shell_env, write

DATE = re.compile(rb"Date: (\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                  rb"(\d{4}) (\d\d):(\d\d):(\d\d) ([+-]\d{4})\n")


@pytest.fixture(scope="module")
def home():
    yield from module_home()


def expected_date(when, tz):
    """The field for `when` in zone tz, computed by the C library via date(1)."""
    out = subprocess.run(["date", "-d", "@%d" % when, "+%-d %b %Y %H:%M:%S %z"],
                         env={"TZ": tz, "LC_ALL": "C"}, capture_output=True, check=True)
    return b"Date: " + out.stdout


@pytest.mark.parametrize("tz,offset", [("UTC", b"+0000"), ("America/St_Johns", None),
                                       ("Asia/Kolkata", b"+0530"), ("America/New_York", None)])
def test_predate_local_date(home, tz, offset):
    start = int(time.time())
    r = subprocess.run([home.bin("predate"), "cat"], input=b"To: x\n\nbody", capture_output=True,
                       env={"PATH": "/usr/bin:/bin", "TZ": tz})
    end = int(time.time())
    assert (r.returncode, r.stderr) == (0, b"")
    line, rest = r.stdout.split(b"\n", 1)
    assert rest == b"To: x\n\nbody"
    assert line + b"\n" in [expected_date(t, tz) for t in range(start, end + 1)]
    if offset is not None:
        assert line.endswith(b" " + offset)
    if tz == "America/St_Johns":
        assert line[-5:] in (b"-0330", b"-0230")


def test_predate_exit_codes_and_errors(home):
    p = home.bin("predate")
    r = subprocess.run([p, "sh", "-c", "cat >/dev/null; exit 7"], capture_output=True, input=b"x")
    assert (r.returncode, r.stderr) == (7, b"")
    r = subprocess.run([p], capture_output=True)
    assert (r.returncode, r.stderr) == (100, b"predate: usage: predate child\n")
    r = subprocess.run([p, "/nonexistent/prog"], capture_output=True, input=b"x")
    assert (r.returncode, r.stderr) == (
        111, b"predate: fatal: unable to run /nonexistent/prog: file does not exist\n")
    r = subprocess.run([p, ""], capture_output=True, input=b"x")
    assert (r.returncode, r.stderr) == (111, b"predate: fatal: unable to run : file does not exist\n")
    r = subprocess.run([p, "sh", "-c", "kill -9 $$"], capture_output=True, input=b"x")
    assert (r.returncode, r.stderr) == (111, b"predate: fatal: child crashed\n")
    # a child that does not read: predate ignores the broken pipe
    r = subprocess.run([p, "true"], capture_output=True, input=b"x" * 1000000)
    assert (r.returncode, r.stderr) == (0, b"")


def test_datemail_keeps_local_date(home):
    env = base_env(TZ="Asia/Kolkata")
    start = int(time.time())
    r = run(home, b"To: a@b.c\nSubject: s\n\nbody\n", "-t", "x@y.z", env=env, queue=True,
            program="datemail")
    end = int(time.time())
    assert (r.code, r.err) == (0, b"")
    message, envelope = home.captured()
    assert envelope == b"Fme@host.example.com\0Tx@y.z\0Ta@b.c\0\0"
    m = re.fullmatch(rb"Message-ID: <\d{14}\.\d+\.qmail@host.example.com>\n"
                     rb"From: me@host.example.com\n(Date: [^\n]*\n)To: a@b.c\nSubject: s\n\nbody\n",
                     message)
    assert m, message
    assert m.group(1) in [expected_date(t, "Asia/Kolkata") for t in range(start, end + 1)]


def test_mailsubj(home):
    r = run(home, b"the body\n", "Hello there", "a@b.c", "joe", queue=True, program="mailsubj")
    assert (r.code, r.err) == (0, b"")
    message, envelope = home.captured()
    assert envelope == b"Fme@host.example.com\0Tjoe@host.example.com\0Ta@b.c\0\0"
    text, _ = generated(r, message, pid=_inject_pid(message))
    assert text == (b"Date: DATE\nMessage-ID: <ID.qmail@host.example.com>\n"
                    b"From: me@host.example.com\nSubject: Hello there\n"
                    b"To: a@b.c, joe@host.example.com\n\nthe body\n")


def _inject_pid(message):
    """qmail-inject runs as mailsubj's child: its pid is in the Message-ID."""
    return int(re.search(rb"Message-ID: <\d{14}\.(\d+)\.qmail@", message).group(1))


def test_mailsubj_without_recipients_and_failures(home):
    r = run(home, b"x\n", "subj", queue=True, program="mailsubj")
    assert r.code == 0
    message, envelope = home.captured()
    assert envelope == b"Fme@host.example.com\0\0"
    assert message.endswith(b"\nSubject: subj\nTo:\n\nx\n")
    r = run(home, b"x\n", "s", "a@b.c", queue=True, capexit=31, program="mailsubj")
    assert (r.code, r.err) == (100, b"qmail-inject: fatal: mail server permanently "
                                    b"rejected message (#5.3.0)\n")
    r = run(home, b"x\n", queue=True, program="mailsubj")
    assert r.code == 2 and home.captured() == [None, None]


def test_unprivileged(home):
    r = run(home, HEAD + b"To: a@b.c\n", "-t", queue=True, program="datemail", user="nobody")
    assert (r.code, r.err) == (0, b"")
    r = run(home, b"x\n", "s", "a@b.c", queue=True, program="mailsubj", user="nobody")
    assert (r.code, r.err) == (0, b"")
    assert home.captured()[1] == b"Fme@host.example.com\0Ta@b.c\0\0"


def test_environment_passed_on_unchanged(home):
    # the child sees the caller's environment: no LC_CTYPE=C.UTF-8 from Python
    r = subprocess.run([home.bin("predate"), "env"], input=b"", capture_output=True,
                       env={"PATH": "/usr/bin:/bin", "X_KEEP": "1"})
    assert (r.returncode, r.stdout) == (0, b"PATH=/usr/bin:/bin\nX_KEEP=1\n")


@pytest.fixture
def own_home():
    """An installation whose bin/qmail-inject is a fake printing its environment."""
    need_root()
    base = public_tmpdir("pyqmail-predate-")
    h = Home(base)
    write(h.bin("qmail-inject"), b"#!/bin/sh\ncat >/dev/null\nenv\n", 0o755)
    yield h
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("program,args", [("mailsubj", ["s", "a@b.c"]), ("datemail", ["-t"])])
def test_front_ends_pass_environment_on(own_home, program, args):
    r = run(own_home, b"x\n", *args, program=program, env=base_env(X_KEEP="1"))
    assert r.code == 0, r.err
    assert shell_env(r.out) == [b"PATH=/usr/bin:/bin", b"USER=me", b"X_KEEP=1"]
