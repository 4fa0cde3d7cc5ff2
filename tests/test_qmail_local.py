"""qmail-local: .qmail lookup and every line type, maildir and mbox bytes,
program environment and exit codes, forwards, loop check, mode checks
(spec/local.md §5, spec/maildir-mbox.md §2, §4)."""
import mailbox
import os
import re
import stat
import subprocess
import time

import pytest

from conftest import need_root, public_tmpdir
from localusers import Users

MESSAGE = b"Received: from x\nSubject: hi\n\nFrom here\n>From there\nbody\n"
SENDER = b"joe@example.org"
PATRN_ERR = b"Uh-oh: .qmail file is writable. (#4.7.0)\n"


@pytest.fixture(scope="module")
def users():
    need_root()
    made = Users()
    yield made
    made.cleanup()


@pytest.fixture
def user(users, request):
    """A fresh account per test (its own empty home)."""
    return users.make("l%d" % (len(users.names)))


@pytest.fixture
def spool():
    """A directory every uid may write (capture files of QMAILQUEUE)."""
    path = public_tmpdir("pyqmail-spool-")
    os.chmod(path, 0o1777)
    yield path
    subprocess.run(["rm", "-rf", path])


def message_file(data: bytes) -> str:
    d = public_tmpdir("pyqmail-msg-")
    path = os.path.join(d, "mess")
    with open(path, "wb") as f:
        f.write(data)
    return path


def local(qmail_home, user, args=None, ext="", dash=None, message=MESSAGE, sender=SENDER,
          env=None, options=(), localpart=None, host=b"Host.Example.COM",
          default=b"./Mailbox", home=None):
    """Run the installed qmail-local as the user; (exit code, stdout, stderr)."""
    ext = os.fsencode(ext)
    if dash is None:
        dash = b"-" if ext else b""
    if localpart is None:
        localpart = os.fsencode(user.name) + (b"-" + ext if ext else b"")
    argv = [os.path.join(qmail_home, "bin", "qmail-local"), *options, "--", user.name,
            home or user.home, localpart, dash, ext, host, sender, default]
    if args is not None:
        argv = [os.path.join(qmail_home, "bin", "qmail-local"), *args]
    path = message_file(message)
    with open(path, "rb") as f:
        done = subprocess.run(argv, stdin=f, capture_output=True, user=user.uid, group=user.gid,
                              extra_groups=[user.gid], env=env or {"PATH": "/usr/bin:/bin"},
                              timeout=60)
    subprocess.run(["rm", "-rf", os.path.dirname(path)])
    return done.returncode, done.stdout, done.stderr


def maildir_messages(path):
    names = sorted(os.listdir(os.path.join(path, "new")))
    out = []
    for n in names:
        with open(os.path.join(path, "new", n), "rb") as f:
            out.append(f.read())
    return names, out


def read(path):
    with open(path, "rb") as f:
        return f.read()


UFLINE = re.compile(rb"From joe@example.org (Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
                    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d\d \d\d:\d\d:\d\d \d{4}\n")


# --- default delivery, mbox and maildir bytes --------------------------------

def test_default_mbox_bytes(qmail_home, user):
    code, out, err = local(qmail_home, user)
    assert (code, out, err) == (0, b"did 1+0+0\n", b"")
    data = read(os.path.join(user.home, "Mailbox"))
    first, rest = data.split(b"\n", 1)
    assert UFLINE.fullmatch(first + b"\n")
    assert rest == (b"Return-Path: <joe@example.org>\n"
                    b"Delivered-To: %s@Host.Example.COM\n" % user.name.encode()
                    + b"Received: from x\nSubject: hi\n\n>From here\n>>From there\nbody\n\n")
    st = os.stat(os.path.join(user.home, "Mailbox"))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o600)
    box = mailbox.mbox(os.path.join(user.home, "Mailbox"), create=False)
    (msg,) = box.values()
    assert msg["Subject"] == "hi"
    assert msg.get_from().startswith("joe@example.org ")
    assert msg.get_payload().startswith(">From here\n")  # mboxo readers strip nothing


def test_mbox_unterminated_last_line_and_second_message(qmail_home, user):
    local(qmail_home, user, message=b"Subject: a\n\nno newline")
    local(qmail_home, user, message=b"Subject: b\n\nFrom x\n", sender=b"")
    data = read(os.path.join(user.home, "Mailbox"))
    parts = data.split(b"\nFrom ")
    assert parts[0].endswith(b"Subject: a\n\nno newline\n")
    assert parts[1].startswith(b"MAILER-DAEMON ")
    assert parts[1].endswith(b"Return-Path: <>\nDelivered-To: %s@Host.Example.COM\n"
                             % user.name.encode() + b"Subject: b\n\n>From x\n\n")
    box = mailbox.mbox(os.path.join(user.home, "Mailbox"), create=False)
    assert [m["Subject"] for m in box] == ["a", "b"]


def test_mbox_and_loop_check_linear_in_a_long_line(qmail_home, user):
    """A 48 MB header line (no databytes limit by default) is read in linear
    time by the loop check and the mbox writer, as qmail's getln() does."""
    long = b"X-Long: " + b"a" * (48 << 20) + b"\n"
    started = time.monotonic()
    assert local(qmail_home, user, message=b"Received: x\n" + long + b"\nFrom b\n") == (
        0, b"did 1+0+0\n", b"")
    assert time.monotonic() - started < 10
    data = read(os.path.join(user.home, "Mailbox"))
    assert data.endswith(b"Received: x\n" + long + b"\n>From b\n\n")


def test_maildir_bytes(qmail_home, user):
    user.maildir()
    user.write(".qmail", b"./Maildir/\n")
    code, out, err = local(qmail_home, user, message=MESSAGE)
    assert (code, out, err) == (0, b"did 1+0+0\n", b"")
    names, bodies = maildir_messages(os.path.join(user.home, "Maildir"))
    assert bodies == [b"Return-Path: <joe@example.org>\nDelivered-To: %s@Host.Example.COM\n"
                      % user.name.encode() + MESSAGE]
    assert re.fullmatch(r"\d+\.\d+\.[^/]+", names[0])
    assert names[0].split(".", 2)[2] == os.uname().nodename[:64]
    assert os.listdir(os.path.join(user.home, "Maildir", "tmp")) == []
    st = os.stat(os.path.join(user.home, "Maildir", "new", names[0]))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, 0o600)
    box = mailbox.Maildir(os.path.join(user.home, "Maildir"), factory=None, create=False)
    (msg,) = box.values()
    assert msg["Return-Path"] == "<joe@example.org>"
    assert msg.get_payload() == "From here\n>From there\nbody\n"



def test_two_maildir_lines_and_a_program_after_them(qmail_home, user):
    """Two lines naming one Maildir give two messages with distinct names
    (TIME.PID.HOST, then maildir(5)'s TIME.PID_2.HOST for a process's second
    message), and a program line after them still runs in the home directory."""
    user.maildir()
    user.write(".qmail", b"./Maildir/\n./Maildir/\n|pwd > pwd.out\n")
    code, out, err = local(qmail_home, user, message=MESSAGE)
    assert (code, out, err) == (0, b"did 2+0+1\n", b"")
    names, bodies = maildir_messages(os.path.join(user.home, "Maildir"))
    assert len(set(names)) == 2 and len(bodies) == 2 and bodies[0] == bodies[1]
    middles = sorted(name.split(".")[1] for name in names)
    assert middles[1] == middles[0] + "_2" and middles[0].isdigit()
    assert read(os.path.join(user.home, "pwd.out")) == user.home.encode() + b"\n"
    assert sorted(os.listdir(os.path.join(user.home, "Maildir"))) == ["cur", "new", "tmp"]

def test_return_path_quoting(qmail_home, user):
    local(qmail_home, user, sender=b"a b\n@x.example")
    data = read(os.path.join(user.home, "Mailbox"))
    assert data.startswith(b"From a-b-@x.example ")
    assert b'\nReturn-Path: <"a b\\_"@x.example>\n' in data


def test_two_concurrent_mbox_deliveries_do_not_interleave(qmail_home, user):
    big = [b"Subject: %d\n\n" % i + (b"%d" % i * 79 + b"\n") * 20000 for i in range(2)]
    paths = [message_file(m) for m in big]
    procs = []
    for p in paths:
        f = open(p, "rb")
        procs.append((f, subprocess.Popen(
            [os.path.join(qmail_home, "bin", "qmail-local"), "--", user.name, user.home, user.name,
             "", "", "h", "s@h", "./Mailbox"], stdin=f, user=user.uid, group=user.gid,
            extra_groups=[user.gid], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={})))
    for f, p in procs:
        p.communicate(timeout=60)
        f.close()
        assert p.returncode == 0
    box = mailbox.mbox(os.path.join(user.home, "Mailbox"), create=False)
    got = sorted(m.as_bytes().split(b"\n\n", 1)[1] for m in box)
    assert got == sorted(m.split(b"\n\n", 1)[1] for m in big)


# --- .qmail lookup -----------------------------------------------------------

@pytest.mark.parametrize("ext,files,chosen,default", [
    ("foo-bar", [".qmail-foo-bar", ".qmail-foo-default", ".qmail-default"], ".qmail-foo-bar", None),
    ("foo-bar", [".qmail-foo-default", ".qmail-default"], ".qmail-foo-default", b"bar"),
    ("foo-bar", [".qmail-default"], ".qmail-default", b"foo-bar"),
    ("a-b-", [".qmail-a-b-default", ".qmail-a-default"], ".qmail-a-b-default", b""),
    ("a-b-", [".qmail-a-default"], ".qmail-a-default", b"b-"),
    ("Foo.Bar", [".qmail-foo:bar", ".qmail-default"], ".qmail-foo:bar", None),
    ("Foo.Bar", [".qmail-default"], ".qmail-default", b"Foo.Bar"),
    ("x-Default", [".qmail-x-default"], ".qmail-x-default", b"Default"),
    ("", [".qmaildefault"], ".qmaildefault", b""),
])
def test_lookup_order_and_default(qmail_home, user, ext, files, chosen, default):
    dash = "" if ext == "" else "-"
    for name in files:
        user.write(name, b"|echo %s $DEFAULT-${DEFAULT+set}\n" % name.encode(), 0o600)
    code, out, err = local(qmail_home, user, ext=ext, dash=dash.encode())
    assert code == 0, err
    shown = b"-" if default is None else default + b"-set"
    assert out == b"%s %s\ndid 0+0+1\n" % (chosen.encode(), shown)


def test_missing_with_dash_bounces_and_empty_dash_uses_default(qmail_home, user):
    assert local(qmail_home, user, ext="nosuch") == (
        100, b"", b"Sorry, no mailbox here by that name. (#5.1.1)\n")
    assert local(qmail_home, user, ext="", dash=b"", default=b"|echo dflt")[:2] == (0, b"dflt\ndid 0+0+1\n")


def test_empty_file_means_default_delivery(qmail_home, user):
    user.write(".qmail-empty", b"")
    assert local(qmail_home, user, ext="empty", default=b"|echo a\n|echo b")[:2] == (
        0, b"a\nb\ndid 0+0+2\n")


@pytest.mark.parametrize("ext", ["../../etc/passwd", "..", "x/../../y", "a/b", "$(touch pwned)",
                                 "`id`;rm -rf /", "x" * 1000, "h\xe9llo", "A.B/../C"])
def test_hostile_extensions_stay_in_home(qmail_home, user, ext):
    user.write(".qmail-default", b"|echo \"D=$DEFAULT\"\n")
    code, out, err = local(qmail_home, user, ext=ext)
    assert (code, err) == (0, b"")
    assert out == b"D=" + os.fsencode(ext) + b"\ndid 0+0+1\n"
    assert not os.path.exists("pwned") and not os.path.exists(os.path.join(user.home, "pwned"))


def test_slash_extension_reaches_only_qmail_subdirectory(qmail_home, user):
    user.mkdir(".qmail-sub")
    user.write(".qmail-sub/x", b"|echo inside\n")
    assert local(qmail_home, user, ext="sub/x")[:2] == (0, b"inside\ndid 0+0+1\n")


# --- .qmail files: symlink, modes, size ------------------------------------------

def test_symlinked_qmail_is_followed_as_qmail_does(qmail_home, user):
    user.write("real", b"|echo via-link\n")
    os.symlink("real", os.path.join(user.home, ".qmail-ln"))
    assert local(qmail_home, user, ext="ln")[:2] == (0, b"via-link\ndid 0+0+1\n")


def test_symlink_to_directory_or_dangling_is_not_a_qmail_file(qmail_home, user):
    user.mkdir("dir")
    os.symlink("dir", os.path.join(user.home, ".qmail-d"))
    os.symlink("nowhere", os.path.join(user.home, ".qmail-n"))
    user.write(".qmail-default", b"|echo fallback\n")
    assert local(qmail_home, user, ext="d")[:2] == (0, b"fallback\ndid 0+0+1\n")
    assert local(qmail_home, user, ext="n")[:2] == (0, b"fallback\ndid 0+0+1\n")


def test_fifo_is_not_a_qmail_file(qmail_home, user):
    """open_read() is O_NDELAY: a FIFO opens at once and is skipped as not regular."""
    fifo = os.path.join(user.home, ".qmail-f")
    os.mkfifo(fifo, 0o600)
    os.chown(fifo, user.uid, user.gid)
    user.write(".qmail-default", b"|echo fallback\n")
    assert local(qmail_home, user, ext="f")[:2] == (0, b"fallback\ndid 0+0+1\n")


def test_symlink_to_world_writable_file_is_refused(qmail_home, user):
    user.write("ww", b"|echo no\n", 0o666)
    os.symlink("ww", os.path.join(user.home, ".qmail-w"))
    assert local(qmail_home, user, ext="w") == (111, b"", PATRN_ERR)


def test_world_writable_qmail_is_refused(qmail_home, user):
    user.write(".qmail", b"|echo no\n", 0o602)
    assert local(qmail_home, user) == (111, b"", PATRN_ERR)


def test_group_writable_qmail_is_accepted(qmail_home, user):
    user.write(".qmail", b"|echo yes\n", 0o620)
    assert local(qmail_home, user)[:2] == (0, b"yes\ndid 0+0+1\n")


def test_unreadable_qmail_defers(qmail_home, user):
    user.write(".qmail-x", b"|echo no\n", 0o000)
    assert local(qmail_home, user, ext="x") == (
        111, b"", b"Unable to open .qmail-x: access denied. (#4.3.0)\n")


def test_one_megabyte_qmail_file(qmail_home, user):
    user.write(".qmail", b"# padding\n" * 100000 + b"|echo last\n")
    assert local(qmail_home, user)[:2] == (0, b"last\ndid 0+0+1\n")


def test_home_writable_and_sticky(qmail_home, user):
    os.chmod(user.home, 0o757)
    assert local(qmail_home, user) == (111, b"", b"Uh-oh: home directory is writable. (#4.7.0)\n")
    os.chmod(user.home, 0o1755)
    assert local(qmail_home, user) == (
        111, b"", b"Home directory is sticky: user is editing his .qmail file. (#4.2.1)\n")
    assert local(qmail_home, user, options=["-n"]) == (
        0, b"mbox ./Mailbox\ndid 1+0+0\n", b"Warning: home directory is sticky.\n")


def test_missing_home(qmail_home, user):
    gone = os.path.join(user.home, "nonexistent")
    assert local(qmail_home, user, home=gone) == (
        111, b"", b"Unable to switch to %s: file does not exist. (#4.3.0)\n" % gone.encode())


def test_x_bit_makes_file_forward_only(qmail_home, user, spool):
    user.write(".qmail-m", b"./Mailbox\n", 0o700)
    assert local(qmail_home, user, ext="m") == (
        111, b"", b"Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)\n")
    user.write(".qmail-p", b"|true\n", 0o700)
    assert local(qmail_home, user, ext="p") == (
        111, b"", b"Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)\n")
    user.write(".qmail-l", b"|echo before\n+list\n|echo after\n", 0o600)
    assert local(qmail_home, user, ext="l") == (
        111, b"before\n", b"Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)\n")


# --- instruction lines ----------------------------------------------------------

def test_blank_first_line_defers_later_blank_ignored(qmail_home, user):
    user.write(".qmail-b", b"\n|echo x\n")
    assert local(qmail_home, user, ext="b") == (
        111, b"", b"Uh-oh: first line of .qmail file is blank. (#4.2.1)\n")
    user.write(".qmail-c", b"  \t\n")
    assert local(qmail_home, user, ext="c") == (
        111, b"", b"Uh-oh: first line of .qmail file is blank. (#4.2.1)\n")
    user.write(".qmail-d", b"#c\n\n \t \n|echo x   \t\n+other\n")
    assert local(qmail_home, user, ext="d")[:2] == (0, b"x\ndid 0+0+1\n")


def test_only_comments_discards(qmail_home, user):
    user.write(".qmail-c", b"# nothing here\n")
    assert local(qmail_home, user, ext="c") == (0, b"did 0+0+0\n", b"")
    assert not os.path.exists(os.path.join(user.home, "Mailbox"))


def test_absolute_and_relative_file_lines(qmail_home, user):
    user.mkdir("sub")
    user.write(".qmail", b"./sub/box\n%s/abs\n" % user.home.encode())
    assert local(qmail_home, user)[:2] == (0, b"did 2+0+0\n")
    assert read(os.path.join(user.home, "sub/box")).count(b"Subject: hi") == 1
    assert read(os.path.join(user.home, "abs")).count(b"Subject: hi") == 1


def test_dash_n_describes_without_delivering(qmail_home, user):
    user.write(".qmail", b"./Maildir/\n./mbox\n|prog arg \n&fw@x\nother@y\n# c\n")
    assert local(qmail_home, user, options=["-n"]) == (
        0, b"maildir ./Maildir/\nmbox ./mbox\nprogram prog arg\nforward fw@x\nforward other@y\n"
           b"did 2+2+1\n", b"")
    assert sorted(os.listdir(user.home)) == [".qmail"]


ENV_KEYS = [b"SENDER", b"NEWSENDER", b"RECIPIENT", b"USER", b"HOME", b"HOST", b"HOST2",
            b"HOST3", b"HOST4", b"LOCAL", b"EXT", b"EXT2", b"EXT3", b"EXT4", b"DEFAULT",
            b"DTLINE", b"RPLINE", b"UFLINE"]


def program_env(qmail_home, user, ext, **kw):
    user.write(".qmail-default", b"|env -0 > env.out\n")
    code, out, err = local(qmail_home, user, ext=ext, **kw)
    assert (code, out, err) == (0, b"did 0+0+1\n", b"")
    data = read(os.path.join(user.home, "env.out"))
    return dict(item.split(b"=", 1) for item in data.split(b"\0") if item)


def test_program_environment(qmail_home, user):
    env = program_env(qmail_home, user, "Foo.Bar-baz-q-r", localpart=b"Joe-Foo.Bar-baz-q-r",
                      host=b"a.b.c.d", env={"PATH": "/usr/bin:/bin", "KEEP": "me"})
    name = user.name.encode()
    assert env.pop(b"UFLINE").startswith(b"From joe@example.org ")
    assert env.pop(b"PWD") == user.home.encode()  # set by /bin/sh itself
    assert env == {
        b"PATH": b"/usr/bin:/bin", b"KEEP": b"me",
        b"SENDER": b"joe@example.org", b"NEWSENDER": b"joe@example.org",
        b"RECIPIENT": b"Joe-Foo.Bar-baz-q-r@a.b.c.d", b"USER": name, b"HOME": user.home.encode(),
        b"HOST": b"a.b.c.d", b"HOST2": b"a.b.c", b"HOST3": b"a.b", b"HOST4": b"a",
        b"LOCAL": b"Joe-Foo.Bar-baz-q-r", b"EXT": b"Foo.Bar-baz-q-r", b"EXT2": b"baz-q-r",
        b"EXT3": b"q-r", b"EXT4": b"r", b"DEFAULT": b"Foo.Bar-baz-q-r",
        b"DTLINE": b"Delivered-To: Joe-Foo.Bar-baz-q-r@a.b.c.d\n",
        b"RPLINE": b"Return-Path: <joe@example.org>\n",
    }


def test_program_environment_short_values(qmail_home, user):
    env = program_env(qmail_home, user, "x", host=b"nodots", sender=b"")
    assert (env[b"HOST2"], env[b"HOST3"], env[b"HOST4"]) == (b"nodots",) * 3
    assert (env[b"EXT2"], env[b"EXT3"], env[b"EXT4"]) == (b"", b"", b"")
    assert env[b"RPLINE"] == b"Return-Path: <>\n"
    assert env[b"UFLINE"].startswith(b"From MAILER-DAEMON ")
    assert env[b"NEWSENDER"] == b""


def test_program_runs_as_user_in_home_with_message_on_stdin(qmail_home, user):
    user.write(".qmail", b"|id -u; id -G; pwd; umask; cat; ls -l /proc/self/fd | wc -l\n")
    code, out, err = local(qmail_home, user)
    assert code == 0
    lines = out.split(b"\n")
    assert lines[:4] == [b"%d" % user.uid, b"%d" % user.gid, user.home.encode(), b"0077"]
    assert b"\n".join(lines[4:]).startswith(MESSAGE)


@pytest.mark.parametrize("exitcode,expected", [
    (0, 0), (100, 100), (64, 100), (65, 100), (70, 100), (76, 100), (77, 100), (78, 100),
    (112, 100), (111, 111), (1, 111), (2, 111), (75, 111), (99, 0)])
def test_program_exit_codes(qmail_home, user, exitcode, expected):
    user.write(".qmail", b"|echo out; echo err >&2; exit %d\n|echo second\n" % exitcode)
    code, out, err = local(qmail_home, user)
    assert code == expected
    if exitcode == 0:
        assert (out, err) == (b"out\nsecond\ndid 0+0+2\n", b"err\n")
    elif exitcode == 99:
        assert (out, err) == (b"out\ndid 0+0+1\n", b"err\n")
    else:
        assert (out, err) == (b"out\n", b"err\n")


def test_program_killed_by_signal(qmail_home, user):
    user.write(".qmail", b"|kill -9 $$\n")
    assert local(qmail_home, user) == (111, b"", b"Aack, child crashed. (#4.3.0)\n")


def test_exit_99_still_forwards(qmail_home, user, spool):
    capture = make_capture(spool)
    user.write(".qmail", b"&a@x\n|exit 99\n&b@x\n")
    code, out, err = local(qmail_home, user, env={"QMAILQUEUE": capture})
    assert (code, err) == (0, b"")
    assert read(os.path.join(spool, "env")) == b"Fjoe@example.org\0Ta@x\0\0"


# --- forwarding -------------------------------------------------------------------

def make_capture(spool, code=0):
    path = os.path.join(spool, "capture")
    with open(path, "w") as f:
        f.write("#!/bin/sh\ncat > %s/msg\ncat <&1 > %s/env\nexit %d\n" % (spool, spool, code))
    os.chmod(path, 0o755)
    return path


def test_forward_lines(qmail_home, user, spool):
    capture = make_capture(spool)
    user.write(".qmail", b"&one@x.example\ntwo@y.example\n <three@z>\n&\n")
    code, out, err = local(qmail_home, user, env={"QMAILQUEUE": capture})
    assert (code, err) == (0, b"")
    assert re.fullmatch(rb"did 0\+4\+0\nqp \d+\n", out)
    assert read(os.path.join(spool, "msg")) == (
        b"Delivered-To: %s@Host.Example.COM\n" % user.name.encode() + MESSAGE)
    assert read(os.path.join(spool, "env")) == (
        b"Fjoe@example.org\0Tone@x.example\0Ttwo@y.example\0T <three@z>\0T\0\0")


@pytest.mark.parametrize("qcode,expected,text", [
    (31, 100, b"Unable to forward message: mail server permanently rejected message (#5.3.0).\n"),
    (71, 111, b"Unable to forward message: mail server temporarily rejected message (#4.3.0).\n"),
])
def test_forward_failures(qmail_home, user, spool, qcode, expected, text):
    capture = make_capture(spool, qcode)
    user.write(".qmail", b"a@x\n")
    assert local(qmail_home, user, env={"QMAILQUEUE": capture}) == (expected, b"", text)


def test_forward_without_queue_service_defers(qmail_home, user):
    user.write(".qmail", b"a@x\n")
    assert local(qmail_home, user) == (
        111, b"", b"Unable to forward message: connection to mail server rejected (#4.4.1).\n")


@pytest.mark.parametrize("files,sender,newsender", [
    ([], b"s@x", b"s@x"),
    ([".qmail-list-owner"], b"s@x", b"LOCAL-owner@h.example"),
    ([".qmail-list-owner", ".qmail-list-owner-default"], b"s@x", b"LOCAL-owner-@h.example-@[]"),
    ([".qmail-list-owner"], b"", b""),
    ([".qmail-list-owner"], b"#@[]", b"#@[]"),
])
def test_newsender(qmail_home, user, spool, files, sender, newsender):
    capture = make_capture(spool)
    user.write(".qmail-list", b"sub@x\n")
    for name in files:
        user.write(name, b"owner@x\n")
    localpart = user.name.encode() + b"-list"
    code, out, err = local(qmail_home, user, ext="list", sender=sender, host=b"h.example",
                           env={"QMAILQUEUE": capture})
    assert code == 0, err
    assert read(os.path.join(spool, "env")) == (
        b"F" + newsender.replace(b"LOCAL", localpart) + b"\0Tsub@x\0\0")


# --- loop check --------------------------------------------------------------------

def test_delivered_to_loop(qmail_home, user):
    name = user.name.encode()
    looping = b"Delivered-To: %s@Host.Example.COM\nSubject: x\n\nbody\n" % name
    assert local(qmail_home, user, message=looping) == (
        100, b"", b"This message is looping: it already has my Delivered-To line. (#5.4.6)\n")
    # only header lines count, and the comparison is exact
    for ok in (b"Subject: x\n\nDelivered-To: %s@Host.Example.COM\n" % name,
               b"Delivered-To: %s@host.example.com\n\nx\n" % name,
               b"Delivered-To: %s@Host.Example.COM" % name):
        assert local(qmail_home, user, message=ok)[0] == 0


# --- maildir and mbox failures -----------------------------------------------------------

def test_maildir_missing_defers(qmail_home, user):
    user.write(".qmail", b"./Maildir/\n")
    assert local(qmail_home, user) == (111, b"", b"Unable to chdir to maildir. (#4.2.1)\n")


def test_maildir_not_writable_defers(qmail_home, user):
    user.maildir()
    os.chmod(os.path.join(user.home, "Maildir", "tmp"), 0o500)
    user.write(".qmail", b"./Maildir/\n")
    assert local(qmail_home, user) == (111, b"", b"Temporary error on maildir delivery. (#4.3.0)\n")
    os.chmod(os.path.join(user.home, "Maildir", "tmp"), 0o700)
    os.chmod(os.path.join(user.home, "Maildir", "new"), 0o500)
    assert local(qmail_home, user) == (111, b"", b"Temporary error on maildir delivery. (#4.3.0)\n")
    assert os.listdir(os.path.join(user.home, "Maildir", "tmp")) == []


def test_mbox_unopenable_defers(qmail_home, user):
    user.mkdir("Mailbox")
    assert local(qmail_home, user) == (
        111, b"", b"Unable to open ./Mailbox: is a directory. (#4.2.1)\n")


@pytest.fixture
def small_fs(user):
    """A 1 MB tmpfs mounted at ~/full, owned by the user."""
    path = user.mkdir("full")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700,uid=%d,gid=%d"
                           % (user.uid, user.gid), "tmpfs", path], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount tmpfs: " + done.stderr.decode())
    yield path
    subprocess.run(["umount", path], check=True)


def test_disk_full_maildir_defers_and_leaves_nothing(qmail_home, user, small_fs):
    for sub in ("", "/tmp", "/new", "/cur"):
        os.makedirs(small_fs + "/md" + sub, exist_ok=True)
        os.chown(small_fs + "/md" + sub, user.uid, user.gid)
    user.write(".qmail", b"./full/md/\n")
    big = b"Subject: big\n\n" + b"x" * 79 + b"\n" * 1 + (b"y" * 79 + b"\n") * 20000
    assert local(qmail_home, user, message=big) == (
        111, b"", b"Temporary error on maildir delivery. (#4.3.0)\n")
    assert os.listdir(small_fs + "/md/tmp") == [] and os.listdir(small_fs + "/md/new") == []


def test_disk_full_mbox_is_cut_back(qmail_home, user, small_fs):
    user.write(".qmail", b"./full/box\n")
    assert local(qmail_home, user)[0] == 0
    before = read(small_fs + "/box")
    big = b"Subject: big\n\n" + (b"y" * 79 + b"\n") * 20000
    assert local(qmail_home, user, message=big) == (
        111, b"", b"Unable to write ./full/box: out of disk space. (#4.3.0)\n")
    assert read(small_fs + "/box") == before


# --- command line ------------------------------------------------------------------------

def test_usage(qmail_home, user):
    usage = (b"qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain "
             b"sender aliasempty\n")
    assert local(qmail_home, user, args=["a", "b"]) == (100, b"", usage)
    assert local(qmail_home, user, args=["u", "relative", "l", "", "", "h", "s", "./Mailbox"]) == (
        100, b"", usage)
    assert local(qmail_home, user, args=["-x", "u", "/", "l", "", "", "h", "s", "./Mailbox"]) == (
        100, b"", b"qmail-local: illegal option -- x\n" + usage)


def test_dash_n_then_dash_N_delivers(qmail_home, user):
    assert local(qmail_home, user, options=["-nN"])[:2] == (0, b"did 1+0+0\n")
    assert os.path.exists(os.path.join(user.home, "Mailbox"))


def test_run_in_a_forked_child(user):
    """run() works in-process, as qmail-lspawn's child calls it."""
    from pyqmail import qmail_local
    user.write(".qmail", b"|cat\n")
    path = message_file(MESSAGE)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 111
        try:
            os.setgroups([user.gid])
            os.setgid(user.gid)
            os.setuid(user.uid)
            fd = os.open(path, os.O_RDONLY)
            code = qmail_local.run([b"qmail-local", b"--", user.name.encode(), user.home.encode(),
                                    b"x", b"", b"", b"h", b"s", b"./Mailbox"], {}, fd, w)
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    assert os.waitpid(pid, 0)[1] >> 8 == 0
    assert data == MESSAGE + b"did 0+0+1\n"
