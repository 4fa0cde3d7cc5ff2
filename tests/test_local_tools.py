"""maildirmake, maildir2mbox, maildirwatch and the .qmail helpers forward,
condredirect, bouncesaying, except, preline, qreceipt (spec/admin-tools.md
§5-§6, spec/maildir-mbox.md §5)."""
import mailbox
import os
import re
import signal
import stat
import subprocess
import time

import pytest


def tool(home, name, *args, env=None, stdin=b"", cwd=None):
    done = subprocess.run([os.path.join(home, "bin", name), *args], input=stdin,
                          capture_output=True, env=env or {}, cwd=cwd, timeout=60)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def capture(tmp_path):
    """A QMAILQUEUE program saving message and envelope into tmp_path."""
    path = tmp_path / "capture"
    path.write_text("#!/bin/sh\ncat > %s/msg\ncat <&1 > %s/env\nexit ${QCODE:-0}\n" % (tmp_path, tmp_path))
    path.chmod(0o755)
    return str(path)


def test_maildirmake(qmail_home, tmp_path):
    target = str(tmp_path / "md")
    assert tool(qmail_home, "maildirmake", target) == (0, b"", b"")
    for sub in ("", "tmp", "new", "cur"):
        assert stat.S_IMODE(os.stat(os.path.join(target, sub)).st_mode) == 0o700
    assert tool(qmail_home, "maildirmake", target) == (
        111, b"", b"maildirmake: fatal: unable to mkdir %s: file already exists\n" % target.encode())
    assert tool(qmail_home, "maildirmake") == (100, b"", b"maildirmake: usage: maildirmake name\n")


def make_maildir_message(path, name, data, age=10):
    full = os.path.join(path, "new", name)
    with open(full, "wb") as f:
        f.write(data)
    t = time.time() - age
    os.utime(full, (t, t))


def test_maildir2mbox(qmail_home, tmp_path):
    md = str(tmp_path / "md")
    tool(qmail_home, "maildirmake", md)
    make_maildir_message(md, "1.1.h", b"Return-Path: <a b@x>\nSubject: one\n\nFrom me\n", age=20)
    make_maildir_message(md, "2.2.h", b"Return-Path: <>\nSubject: two\n\nno newline", age=10)
    make_maildir_message(md, ".hidden", b"x")
    mbox = str(tmp_path / "mbox")
    with open(mbox, "wb") as f:
        f.write(b"From old Mon Jan 01 00:00:00 2024\nSubject: old\n\nold\n\n")
    env = {"MAILDIR": md, "MAIL": mbox, "MAILTMP": str(tmp_path / "mbox.tmp")}
    assert tool(qmail_home, "maildir2mbox", env=env) == (0, b"", b"")
    with open(mbox, "rb") as f:
        data = f.read()
    assert re.fullmatch(
        rb"From old Mon Jan 01 00:00:00 2024\nSubject: old\n\nold\n\n"
        rb"From a-b@x \w{3} \w{3} \d\d \d\d:\d\d:\d\d \d{4}\nReturn-Path: <a b@x>\nSubject: one\n\n>From me\n\n"
        rb"From MAILER-DAEMON \w{3} \w{3} \d\d \d\d:\d\d:\d\d \d{4}\nReturn-Path: <>\nSubject: two\n\nno newline\n\n",
        data)
    assert sorted(os.listdir(os.path.join(md, "new"))) == [".hidden"]
    assert [m["Subject"] for m in mailbox.mbox(mbox)] == ["old", "one", "two"]
    assert tool(qmail_home, "maildir2mbox", env={"MAIL": mbox, "MAILTMP": "x"}) == (
        111, b"", b"maildir2mbox: fatal: MAILDIR not set\n")


def test_maildir2mbox_relative_mail_is_in_maildir(qmail_home, tmp_path):
    """qmail chdirs to $MAILDIR first: a relative MAIL/MAILTMP is a file there."""
    md = str(tmp_path / "md")
    tool(qmail_home, "maildirmake", md)
    make_maildir_message(md, "1.1.h", b"Return-Path: <a@x>\n\nbody\n")
    env = {"MAILDIR": md, "MAIL": "mbox", "MAILTMP": "mbox.tmp"}
    assert tool(qmail_home, "maildir2mbox", env=env, cwd=str(tmp_path)) == (0, b"", b"")
    assert not os.path.exists(tmp_path / "mbox")
    with open(os.path.join(md, "mbox"), "rb") as f:
        assert re.fullmatch(rb"From a@x .*\nReturn-Path: <a@x>\n\nbody\n\n", f.read())


def test_maildir2mbox_scan_error_and_tmp_cleaning(qmail_home, tmp_path):
    md = str(tmp_path / "md")
    tool(qmail_home, "maildirmake", md)
    old = time.time() - 200000
    for name in ("stale", ".dotfile"):
        path = os.path.join(md, "tmp", name)
        open(path, "wb").close()
        os.utime(path, (old, old))
    os.rmdir(os.path.join(md, "cur"))
    env = {"MAILDIR": md, "MAIL": str(tmp_path / "mbox"), "MAILTMP": str(tmp_path / "mbox.tmp")}
    assert tool(qmail_home, "maildir2mbox", env=env) == (
        111, b"", b"maildir2mbox: fatal: unable to scan $MAILDIR/cur: file does not exist\n")
    # maildir_clean() skips dot files, as the readers do
    assert os.listdir(os.path.join(md, "tmp")) == [".dotfile"]


def maildirwatch_screen(qmail_home, md: str, size: int) -> bytes:
    """The first size bytes maildirwatch writes for md; it is stopped after."""
    proc = subprocess.Popen([os.path.join(qmail_home, "bin", "maildirwatch")], env={"MAILDIR": md},
                            stdout=subprocess.PIPE)
    try:
        out = b""
        while len(out) < size:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
        return out
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_maildirwatch_first_screen(qmail_home, tmp_path):
    md = str(tmp_path / "md")
    tool(qmail_home, "maildirmake", md)
    make_maildir_message(md, "1.1.h", b"Return-Path: <s@x>\nDelivered-To: r@y\nFrom: Joe <j@x>\n"
                                      b"Subject: hello\n\nbody\x01\n")
    expected = (b"\033[;H\033[;JFROM <s@x> TO <r@y>\n\033[1mFrom: Joe <j@x>\033[0m\n"
                b"hello//body//\n\n")
    assert maildirwatch_screen(qmail_home, md, len(expected)) == expected


def test_maildirwatch_header_as_headerbody_reads_it(qmail_home, tmp_path):
    """A From_ line is part of the header, an empty Return-Path leaves `?`, and
    a line that is no field ends the header: body text = LF + that line + rest."""
    md = str(tmp_path / "md")
    tool(qmail_home, "maildirmake", md)
    make_maildir_message(md, "1.1.h", b"From s@x Mon\nReturn-Path:\nSubject: a\nnot a field\nbody")
    expected = b"\033[;H\033[;JFROM ? TO <?>\na//not a field/body/\n\n"
    assert maildirwatch_screen(qmail_home, md, len(expected)) == expected


def test_forward(qmail_home, capture, tmp_path):
    env = {"QMAILQUEUE": capture, "NEWSENDER": "ns@x", "DTLINE": "Delivered-To: me@h\n"}
    code, out, err = tool(qmail_home, "forward", "a@x", "b@y", env=env, stdin=b"Subject: f\n\nb\n")
    assert code == 0 and re.fullmatch(rb"forward: qp \d+\n", err)
    assert (tmp_path / "msg").read_bytes() == b"Delivered-To: me@h\nSubject: f\n\nb\n"
    assert (tmp_path / "env").read_bytes() == b"Fns@x\0Ta@x\0Tb@y\0\0"
    assert tool(qmail_home, "forward", "a@x", env={"DTLINE": "x"}) == (
        100, b"", b"forward: fatal: NEWSENDER not set\n")
    env["QCODE"] = "31"
    assert tool(qmail_home, "forward", "a@x", env=env) == (
        100, b"", b"forward: fatal: mail server permanently rejected message (#5.3.0)\n")


def test_condredirect(qmail_home, capture, tmp_path):
    env = {"QMAILQUEUE": capture, "SENDER": "s@x", "DTLINE": "Delivered-To: me@h\n", "PATH": "/usr/bin:/bin"}
    msg = tmp_path / "m"
    msg.write_bytes(b"Subject: c\n\nb\n")
    with open(msg, "rb") as f:
        done = subprocess.run([os.path.join(qmail_home, "bin", "condredirect"), "new@x", "sh", "-c",
                               "cat >/dev/null; exit 0"], stdin=f, env=env, capture_output=True)
    assert done.returncode == 99 and re.fullmatch(rb"condredirect: qp \d+\n", done.stderr)
    assert (tmp_path / "msg").read_bytes() == b"Delivered-To: me@h\nSubject: c\n\nb\n"
    assert (tmp_path / "env").read_bytes() == b"Fs@x\0Tnew@x\0\0"
    assert tool(qmail_home, "condredirect", "n@x", "false", env=env)[0] == 0
    assert tool(qmail_home, "condredirect", "n@x", "sh", "-c", "exit 111", env=env) == (
        111, b"", b"condredirect: fatal: temporary child error\n")
    assert tool(qmail_home, "condredirect", "n@x", "/nonexistent", env=env)[0] == 0
    assert tool(qmail_home, "condredirect", "n@x", env=env) == (
        100, b"", b"condredirect: usage: condredirect newaddress program [ arg ... ]\n")


def test_bouncesaying_and_except(qmail_home):
    env = {"PATH": "/usr/bin:/bin"}
    assert tool(qmail_home, "bouncesaying", "Go away.", env=env) == (100, b"", b"Go away.\n")
    assert tool(qmail_home, "bouncesaying", "No.", "true", env=env) == (100, b"", b"No.\n")
    assert tool(qmail_home, "bouncesaying", "No.", "false", env=env) == (0, b"", b"")
    assert tool(qmail_home, "bouncesaying", "No.", "sh", "-c", "exit 111", env=env) == (
        111, b"", b"bouncesaying: fatal: temporary child error\n")
    assert tool(qmail_home, "bouncesaying") == (
        100, b"", b"bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]\n")
    assert tool(qmail_home, "except", "true", env=env) == (100, b"", b"")
    assert tool(qmail_home, "except", "false", env=env) == (0, b"", b"")
    assert tool(qmail_home, "except", "sh", "-c", "exit 111", env=env) == (
        111, b"", b"except: fatal: temporary child error\n")
    assert tool(qmail_home, "except") == (100, b"", b"except: usage: except program [ arg ... ]\n")


def test_preline(qmail_home):
    env = {"PATH": "/usr/bin:/bin", "UFLINE": "From s@x Mon Jan 01 00:00:00 2024\n",
           "RPLINE": "Return-Path: <s@x>\n", "DTLINE": "Delivered-To: me@h\n"}
    assert tool(qmail_home, "preline", "cat", env=env, stdin=b"body\n") == (
        0, b"From s@x Mon Jan 01 00:00:00 2024\nReturn-Path: <s@x>\nDelivered-To: me@h\nbody\n", b"")
    assert tool(qmail_home, "preline", "-fr", "cat", env=env, stdin=b"b\n")[1] == b"Delivered-To: me@h\nb\n"
    assert tool(qmail_home, "preline", "-fF", "-d", "cat", env=env, stdin=b"")[1].startswith(b"From ")
    assert tool(qmail_home, "preline", "sh", "-c", "cat; exit 7", env=env)[0] == 7
    code, out, err = tool(qmail_home, "preline", "/nonexistent", env=env)
    # as in qmail, the child's exit (100) races with the parent's write into
    # the pipe, which then fails (111, unable to copy input)
    assert err.startswith(b"preline: fatal: unable to run /nonexistent: file does not exist\n")
    assert (code, out) in ((100, b""), (111, b""))
    assert tool(qmail_home, "preline", "-x", "cat", env=env) == (
        100, b"", b"preline: illegal option -- x\npreline: usage: preline cmd [ arg ... ]\n")
    assert tool(qmail_home, "preline", "cat", env={"PATH": "/bin"}) == (
        100, b"", b"preline: usage: preline cmd [ arg ... ]\n")


def ignored_signals(text: bytes) -> int:
    return int(re.search(rb"SigIgn:\s*([0-9a-f]+)", text).group(1), 16)


def test_helpers_run_programs_with_default_signals(qmail_home):
    """qmail's helpers pass SIGPIPE and SIGXFSZ on as they got them (default
    under qmail-local), although Python ignores both at start-up."""
    env = {"PATH": "/usr/bin:/bin", "UFLINE": "From s@x Mon Jan 01 00:00:00 2024\n",
           "RPLINE": "Return-Path: <s@x>\n", "DTLINE": "Delivered-To: me@h\n"}
    show = "cat >/dev/null; grep ^SigIgn /proc/self/status; exit 1"
    mask = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))
    for args in (("preline", "sh", "-c", show), ("except", "sh", "-c", show),
                 ("bouncesaying", "x", "sh", "-c", show)):
        code, out, _ = tool(qmail_home, *args, env=env)
        assert ignored_signals(out) & mask == 0, args


def test_helpers_pass_their_environment_unchanged(qmail_home):
    """The program sees the helper's environment as qmail-local set it, without
    the LC_CTYPE that Python's locale coercion puts into os.environ."""
    env = {"PATH": "/usr/bin:/bin", "UFLINE": "From s@x Mon Jan 01 00:00:00 2024\n",
           "RPLINE": "Return-Path: <s@x>\n", "DTLINE": "Delivered-To: me@h\n"}
    show = "cat >/dev/null; env -0; exit 1"
    for args in (("preline", "sh", "-c", show), ("except", "sh", "-c", show),
                 ("bouncesaying", "x", "sh", "-c", show)):
        code, out, _ = tool(qmail_home, *args, env=env)
        seen = dict(item.split(b"=", 1) for item in out.split(b"\0") if item)
        seen.pop(b"PWD", None)  # sh sets these itself
        seen.pop(b"SHLVL", None)
        seen.pop(b"_", None)
        assert seen == {k.encode(): v.encode() for k, v in env.items()}, args


def test_qreceipt(qmail_home, capture, tmp_path):
    env = {"QMAILQUEUE": capture, "SENDER": "a b@x"}
    msg = (b"Message-ID: <1@x>\nNotice-Requested-Upon-Delivery-To: Me <me@h>,\n"
           b" other@y\nSubject: s\n\nbody\n")
    assert tool(qmail_home, "qreceipt", "me@h", env=env, stdin=msg) == (0, b"", b"")
    assert (tmp_path / "env").read_bytes() == b"F\0Ta b@x\0\0"
    assert (tmp_path / "msg").read_bytes() == (
        b'From: DELIVERY NOTICE SYSTEM <"a b"@x>\nTo: <"a b"@x>\nSubject: success notice\n\n'
        b"Hi! This is the qreceipt program. Your message was delivered to the\n"
        b"following address: me@h. Thanks for asking.\nYour Message-ID: <1@x>\n")
    os.unlink(tmp_path / "env")
    assert tool(qmail_home, "qreceipt", "ME@h", env=env, stdin=msg) == (0, b"", b"")
    assert tool(qmail_home, "qreceipt", "me@h", env={**env, "SENDER": ""}, stdin=msg) == (0, b"", b"")
    assert not (tmp_path / "env").exists()
    assert tool(qmail_home, "qreceipt", "me@h", env=env,
                stdin=b"Notice-Requested-Upon-Delivery-To: <me@h\n\n") == (
        100, b"", b"qreceipt: fatal: unable to parse this: Notice-Requested-Upon-Delivery-To: <me@h\n")
    assert tool(qmail_home, "qreceipt", "me@h") == (100, b"", b"qreceipt: usage: qreceipt deliveryaddress\n")


def test_qreceipt_header_ends_at_a_non_field_line(qmail_home, capture, tmp_path):
    """headerbody(): a line that is no field ends the header, so a request
    below it is body text and gets no notice."""
    env = {"QMAILQUEUE": capture, "SENDER": "s@x"}
    msg = b"Subject: s\nnot a field\nNotice-Requested-Upon-Delivery-To: me@h\n\nbody\n"
    assert tool(qmail_home, "qreceipt", "me@h", env=env, stdin=msg) == (0, b"", b"")
    assert not (tmp_path / "env").exists()
    msg = b"From s@x Mon Jan 01 00:00:00 2024\nNotice-Requested-Upon-Delivery-To: me@h\n\nbody\n"
    assert tool(qmail_home, "qreceipt", "me@h", env=env, stdin=msg) == (0, b"", b"")
    assert (tmp_path / "env").read_bytes() == b"F\0Ts@x\0\0"


def test_qreceipt_reads_a_long_header_in_linear_time(qmail_home, tmp_path):
    started = time.monotonic()
    msg = b"Subject: x\n" + b"a" * (48 << 20) + b"\n"
    assert tool(qmail_home, "qreceipt", "me@h", env={"SENDER": "s@x"}, stdin=msg) == (0, b"", b"")
    assert time.monotonic() - started < 10
