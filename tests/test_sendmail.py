"""sendmail (spec/inject.md §6): the installed wrapper, driven by its flags and
by real MUAs (bsd-mailx's mail, mutt), queueing through QMAILQUEUE."""
import os
import re
import shutil
import stat
import subprocess

import pytest

from conftest import SRC, need_root, public_tmpdir, wait_for
from injecthelp import HEAD, Home, base_env, drop_to, generated, module_home, run, shell_env, write

USAGE = b"sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]\n"


@pytest.fixture(scope="module")
def home():
    yield from module_home()


@pytest.fixture
def own_home():
    """An installation whose bin/ a test may change (fake qmail-smtpd, qmail-qread)."""
    need_root()
    base = public_tmpdir("pyqmail-sendmail-")
    yield Home(base)
    shutil.rmtree(base, ignore_errors=True)


MSG = HEAD + b"To: to@x.y\nCc: cc@x.y\nBcc: bcc@x.y\nSubject: s\n\n.\nbody\n"


def test_t_uses_header_and_argument_recipients(home):
    r = run(home, MSG, "-t", "-i", "arg@x.y", queue=True, program="sendmail")
    assert (r.code, r.err) == (0, b"")
    assert home.captured() == [HEAD + b"To: to@x.y\nCc: cc@x.y\nSubject: s\n\n.\nbody\n",
                               b"Fme@host.example.com\0Targ@x.y\0Tto@x.y\0Tcc@x.y\0Tbcc@x.y\0\0"]


def test_without_t_only_arguments(home):
    r = run(home, MSG, "-oi", "a@x.y", "b", queue=True, program="sendmail")
    assert r.code == 0
    assert home.captured()[1] == b"Fme@host.example.com\0Ta@x.y\0Tb@host.example.com\0\0"


def test_f_sets_sender_and_generated_from(home):
    env = base_env(NAME="Gone", QMAILHOST="gone.example")
    r = run(home, b"To: a@b.c\n\nx\n", "-F", "Also Gone", "-f", "bounce@lists.example",
            "a@b.c", queue=True, program="sendmail", env=env)
    assert r.code == 0
    message, envelope = home.captured()
    text, _ = generated(r, message)
    assert text == (b"Date: DATE\nMessage-ID: <ID.qmail@host.example.com>\n"
                    b"From: bounce@lists.example\nTo: a@b.c\n\nx\n")
    assert envelope == b"Fbounce@lists.example\0Ta@b.c\0\0"
    r = run(home, HEAD + b"To: a@b.c\n", "-f", "", "-t", queue=True, program="sendmail")
    assert home.captured()[1] == b"F\0Ta@b.c\0\0"
    r = run(home, HEAD + b"To: a@b.c\n", "-fjoe", "-t", queue=True, program="sendmail")
    assert home.captured()[1] == b"Fjoe@host.example.com\0Ta@b.c\0\0"
    assert r.code == 0


def test_F_sets_mailname(home):
    r = run(home, b"To: a@b.c\n", "-F", "Joe User", "-t", queue=True, program="sendmail")
    text, _ = generated(r, home.captured()[0])
    assert b'\nFrom: "Joe User" <me@host.example.com>\n' in text
    r = run(home, b"To: a@b.c\n", "-FJoe", "-t", queue=True, program="sendmail",
            env=base_env(QMAILNAME="Q Name"))
    assert b'\nFrom: "Q Name" <me@host.example.com>\n' in home.captured()[0]


def test_ignored_flags(home):
    r = run(home, MSG, "-oi", "-oem", "-odb", "-B8BITMIME", "-p", "smtp:x", "-v", "-x", "-m",
            "-e", "q", "-Efoo", "-J", "-bm", "-t", "-i", queue=True, program="sendmail")
    assert (r.code, r.err) == (0, b"")
    assert home.captured()[1] == b"Fme@host.example.com\0Tto@x.y\0Tcc@x.y\0Tbcc@x.y\0\0"


def test_options_stop_at_first_argument(home):
    r = run(home, HEAD + b"To: h@x.y\n", "a@x.y", "-t", queue=True, program="sendmail")
    assert r.code == 0
    assert home.captured()[1] == b"Fme@host.example.com\0Ta@x.y\0T-t@host.example.com\0\0"


@pytest.mark.parametrize("args,err", [
    (["-bt"], USAGE), (["-bi"], USAGE), (["-bd"], USAGE), (["-bv"], USAGE),
    (["-q"], b"sendmail: illegal option -- q\n" + USAGE),
    (["-t", "-r", "x"], b"sendmail: illegal option -- r\n" + USAGE),
    (["-f"], b"sendmail: option requires an argument -- f\n" + USAGE),
])
def test_usage(home, args, err):
    r = run(home, MSG, *args, queue=True, program="sendmail")
    assert (r.code, r.out, r.err) == (100, b"", err)
    assert home.captured() == [None, None]


def test_exit_code_is_qmail_injects(home):
    r = run(home, MSG, "-t", queue=True, capexit=31, program="sendmail")
    assert (r.code, r.err) == (100, b"qmail-inject: fatal: mail server permanently "
                                    b"rejected message (#5.3.0)\n")
    r = run(home, HEAD + b"To: (bad\n", "-t", queue=True, program="sendmail")
    assert (r.code, r.err) == (100, b"qmail-inject: fatal: unable to parse this line:\n"
                                    b"To: (bad\n")


def test_unprivileged(home):
    r = run(home, MSG, "-t", queue=True, program="sendmail", user="nobody")
    assert (r.code, r.err) == (0, b"")
    assert home.captured()[1] == b"Fme@host.example.com\0Tto@x.y\0Tcc@x.y\0Tbcc@x.y\0\0"


def link_as(home, name, tmp_path):
    path = tmp_path / name
    path.symlink_to(home.bin("sendmail"))
    return str(path)


def fake(home, name, text):
    write(home.bin(name), b"#!/bin/sh\n" + text, 0o755)


def test_bp_and_mailq_run_qmail_qread(own_home, tmp_path):
    fake(own_home, "qmail-qread", b'echo "qread $# $(pwd)"\nexit 7\n')
    expected = b"qread 0 %s\n" % own_home.home.encode()
    r = run(own_home, b"", "-bp", "ignored", program="sendmail")
    assert (r.code, r.out, r.err) == (7, expected, b"")
    r = subprocess.run([link_as(own_home, "mailq", tmp_path)], capture_output=True, env=base_env())
    assert (r.returncode, r.stdout) == (7, expected)
    os.unlink(own_home.bin("qmail-qread"))
    r = run(own_home, b"", "-bp", program="sendmail")
    assert (r.code, r.err) == (111, b"sendmail: fatal: unable to run qmail-qread\n")


def test_newaliases(home, tmp_path):
    r = subprocess.run([link_as(home, "newaliases", tmp_path)], capture_output=True,
                       env=base_env())
    assert (r.returncode, r.stderr) == (
        100, b"sendmail: fatal: please use fastforward/newaliases instead\n")


def test_bs_runs_qmail_smtpd_with_local_environment(own_home):
    fake(own_home, "qmail-smtpd",
         b'echo "$0 $# $(pwd)"\nenv | grep -E "^(RELAYCLIENT|DATABYTES|PROTO|TCP)" | sort\n'
         b"cat\n")
    r = run(own_home, b"HELO x\r\n", "-bs", program="sendmail")
    assert (r.code, r.err) == (0, b"")
    assert r.out == (b"bin/qmail-smtpd 0 %s\nDATABYTES=0\nPROTO=TCP\nRELAYCLIENT=\n"
                     b"TCPLOCALHOST=localhost\nTCPLOCALIP=127.0.0.1\nTCPREMOTEHOST=localhost\n"
                     b"TCPREMOTEINFO=sendmail-bs\nTCPREMOTEIP=127.0.0.1\nHELO x\r\n"
                     % own_home.home.encode())
    r = run(own_home, b"", "-bs", program="sendmail", env=base_env(PROTO="UNIX"))
    assert r.out == b"bin/qmail-smtpd 0 %s\nPROTO=UNIX\n" % own_home.home.encode()
    os.unlink(own_home.bin("qmail-smtpd"))
    r = run(own_home, b"", "-bs", program="sendmail")
    assert (r.code, r.err) == (111, b"sendmail: fatal: unable to run qmail-smtpd\n")


@pytest.mark.skipif(not os.path.exists(os.path.join(SRC, "bin", "qmail-smtpd")),
                    reason="qmail-smtpd is not in this checkout yet")
def test_bs_with_real_qmail_smtpd(home):
    smtp = b"HELO client\r\nMAIL FROM:<s@x.y>\r\nRCPT TO:<r@x.y>\r\nDATA\r\nSubject: s\r\n\r\nhi\r\n.\r\nQUIT\r\n"
    r = run(home, smtp, "-bs", queue=True, program="sendmail")
    assert r.code == 0
    assert r.out.startswith(b"220 ")
    assert home.captured()[1] == b"Fs@x.y\0Tr@x.y\0\0"


def test_environment_passed_on_unchanged(own_home):
    # the caller's environment, with no LC_CTYPE=C.UTF-8 from Python's locale coercion
    fake(own_home, "qmail-inject", b"env\n")
    fake(own_home, "qmail-smtpd", b"env\n")
    r = run(own_home, b"", "-t", program="sendmail", env=base_env(X_KEEP="1"))
    assert shell_env(r.out) == [b"PATH=/usr/bin:/bin", b"USER=me", b"X_KEEP=1"]
    r = run(own_home, b"", "-bs", program="sendmail", env=base_env(PROTO="UNIX"))
    assert shell_env(r.out) == [b"PATH=/usr/bin:/bin", b"PROTO=UNIX", b"USER=me"]


def test_qmail_inject_runs_in_the_same_process_under_its_name(home):
    """Where bin/qmail-inject is the installed wrapper, sendmail runs its code
    without a second interpreter: while it reads the message, /proc shows the
    process sendmail started as qmail-inject (comm, and argv as sendmail would
    have exec'd it, with no interpreter in front), as a user's own process; the
    message is queued with the same pid in its Message-ID."""
    home.clear()
    env = base_env(QMAILQUEUE=home.capture, CAPDIR=home.capdir)
    p = subprocess.Popen([home.bin("sendmail"), "-t", "-f", "s@x.y", "arg@x.y"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, cwd="/", preexec_fn=drop_to("nobody"))
    try:
        def renamed():
            with open("/proc/%d/comm" % p.pid, "rb") as f:
                return f.read() == b"qmail-inject\n"
        wait_for(renamed)
        with open("/proc/%d/cmdline" % p.pid, "rb") as f:
            assert f.read().rstrip(b"\0").split(b"\0") == \
                [b"bin/qmail-inject", b"-H", b"-f", b"s@x.y", b"--", b"arg@x.y"]
        out, err = p.communicate(b"To: to@x.y\nSubject: s\n\nbody\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert (p.returncode, out, err) == (0, b"", b"")
    message, envelope = home.captured()
    assert envelope == b"Fs@x.y\0Targ@x.y\0Tto@x.y\0\0"
    assert re.search(rb"Message-ID: <\d+\.%d\.qmail@host\.example\.com>\n" % p.pid, message)
    assert message.endswith(b"To: to@x.y\nSubject: s\n\nbody\n")


def test_missing_qmail_inject(own_home):
    os.unlink(own_home.bin("qmail-inject"))
    r = run(own_home, MSG, "-t", program="sendmail")
    assert (r.code, r.err) == (111, b"sendmail: fatal: unable to run qmail-inject\n")


# --- real MUAs -------------------------------------------------------------------

def mua_env(home, tmp_path, **extra):
    muahome = tmp_path / "home"
    muahome.mkdir(exist_ok=True)
    env = base_env(HOME=str(muahome), USER="joe", LOGNAME="joe",
                   QMAILQUEUE=home.capture, CAPDIR=home.capdir)
    env.update(extra)
    return env


def queued(home):
    path = os.path.join(home.capdir, "env")
    wait_for(lambda: os.path.exists(path) and open(path, "rb").read().endswith(b"\0\0"))
    return home.captured()


@pytest.mark.skipif(shutil.which("bsd-mailx") is None, reason="bsd-mailx not installed")
def test_bsd_mailx(home, tmp_path):
    rc = tmp_path / "mailrc"
    rc.write_text("set sendmail=%s\nset sendwait\n" % home.bin("sendmail"))
    home.clear()
    r = subprocess.run(["bsd-mailx", "-s", "mailx subject", "rcpt@example.org", "other"],
                       input=b"hello from mailx\n", capture_output=True, timeout=30,
                       env=mua_env(home, tmp_path, MAILRC=str(rc)))
    assert (r.returncode, r.stderr) == (0, b"")
    message, envelope = queued(home)
    assert envelope == b"Fjoe@host.example.com\0Trcpt@example.org\0Tother@host.example.com\0\0"
    header, body = message.split(b"\n\n", 1)
    assert body == b"hello from mailx\n"
    assert b"\nFrom: joe@host.example.com\n" in header
    # mailx writes its own To field (order its choice); qmail-inject completed "other"
    to = [f for f in header.split(b"\n") if f.startswith(b"To: ")]
    assert len(to) == 1
    assert sorted(to[0][4:].split(b", ")) == [b"other@host.example.com", b"rcpt@example.org"]
    assert b"\nSubject: mailx subject\n" in header


@pytest.mark.skipif(shutil.which("mutt") is None, reason="mutt not installed")
def test_mutt(home, tmp_path):
    rc = tmp_path / "muttrc"
    rc.write_text('set sendmail="%s -oi -oem"\nset record=""\nset folder=%s\n'
                  'set spoolfile=%s\n' % (home.bin("sendmail"), tmp_path, tmp_path / "spool"))
    home.clear()
    r = subprocess.run(["mutt", "-n", "-F", str(rc), "-s", "mutt subject", "rcpt@example.org"],
                       input=b"hello from mutt\n", capture_output=True, timeout=30,
                       env=mua_env(home, tmp_path))
    assert r.returncode == 0, r.stderr
    message, envelope = queued(home)
    assert envelope == b"Fjoe@host.example.com\0Trcpt@example.org\0\0"
    header, body = message.split(b"\n\n", 1)
    assert body == b"hello from mutt\n"
    assert b"\nTo: rcpt@example.org\n" in header and b"\nSubject: mutt subject\n" in header


# --- make sendmail-links ------------------------------------------------------------

def test_sendmail_links_offered_not_forced(home, tmp_path):
    links = [str(tmp_path / "sbin" / "sendmail"), str(tmp_path / "lib" / "sendmail")]
    cmd = ["make", "-s", "-C", SRC, "sendmail-links", "QMAIL_HOME=" + home.home,
           "SENDMAIL_LINKS=" + " ".join(links)]
    r = subprocess.run(cmd, capture_output=True)
    assert r.returncode == 0, r.stderr
    for link in links:
        assert os.readlink(link) == home.bin("sendmail")
    assert subprocess.run(cmd, capture_output=True).returncode == 0  # again: no change
    os.unlink(links[1])
    with open(links[1], "wb") as f:
        f.write(b"another MTA\n")
    r = subprocess.run(cmd, capture_output=True)
    assert r.returncode != 0 and b"move it away first" in r.stderr
    assert stat.S_ISREG(os.lstat(links[1]).st_mode)


def test_imports_stay_small(home):
    code = ("import sys; sys.path.insert(0, %r); import pyqmail.sendmail, pyqmail.predate; "
            "print(' '.join(sorted(sys.modules)))" % os.path.join(home.home, "lib", "python"))
    out = subprocess.run(["/usr/bin/python3", "-IS", "-c", code], capture_output=True,
                         check=True).stdout.decode().split()
    for heavy in ("dns", "email", "logging", "argparse", "re", "socket", "subprocess"):
        assert heavy not in out
