"""qmail-getpw, qmail-newu, qmail-pw2u (spec/local.md §3.2, §4)."""
import os
import pwd
import subprocess

import pytest

from conftest import need_root, uid
from localusers import Users
from pyqmail import cdb


@pytest.fixture(scope="module")
def accounts():
    need_root()
    made = Users()
    joe = made.make("joe")
    bob = made.make("rooth", home_owner_root=True)
    aliashome = os.path.join(made.base, "aliashome")
    os.mkdir(aliashome)
    os.chown(aliashome, uid("alias"), -1)
    yield made, joe, bob

    made.cleanup()


def getpw(home, local):
    done = subprocess.run([os.path.join(home, "bin", "qmail-getpw"), *local],
                          capture_output=True, user=uid("qmailp"), group="nofiles",
                          extra_groups=[])
    return done.returncode, done.stdout


class AliasEntry:
    """alias as passwd names it, but with a home this test owns (for qmail-pw2u)."""

    def __init__(self, made):
        pw = pwd.getpwnam("alias")
        self.pw_uid, self.pw_gid = pw.pw_uid, pw.pw_gid
        self.pw_dir = os.path.join(made.base, "aliashome")


def alias_record(ext: bytes) -> bytes:
    pw = pwd.getpwnam("alias")
    return b"alias\0%d\0%d\0%s\0-\0%s\0" % (pw.pw_uid, pw.pw_gid, pw.pw_dir.encode(), ext)


def test_getpw_user_and_extension(qmail_home, accounts):
    _, joe, _ = accounts
    name = joe.name.encode()
    base = b"%s\0%d\0%d\0%s\0" % (name, joe.uid, joe.gid, joe.home.encode())
    assert getpw(qmail_home, [name]) == (0, base + b"\0\0")
    assert getpw(qmail_home, [name + b"-Foo.Bar-x"]) == (0, base + b"-\0Foo.Bar-x\0")
    assert getpw(qmail_home, [name.upper() + b"-x"]) == (0, base + b"-\0x\0")
    assert getpw(qmail_home, [name + b"-"]) == (0, base + b"-\0\0")


@pytest.mark.parametrize("local", [b"root", b"Root", b"root-x", b"nosuchuser", b"../etc",
                                   b"a/b", b"$(id)", b"x" * 40 + b"-y", b"h\xc3\xa9"])
def test_getpw_falls_back_to_alias(qmail_home, accounts, local):
    assert getpw(qmail_home, [local]) == (0, alias_record(local))


def test_getpw_skips_home_owned_by_someone_else(qmail_home, accounts):
    _, _, bob = accounts
    name = bob.name.encode()
    assert getpw(qmail_home, [name + b"-x"]) == (0, alias_record(name + b"-x"))


def test_getpw_without_argument(qmail_home):
    assert getpw(qmail_home, []) == (100, b"")


def newu(home):
    return subprocess.run([os.path.join(home, "bin", "qmail-newu")], capture_output=True)


def test_newu_builds_the_records(fresh_home):
    with open(os.path.join(fresh_home, "users", "assign"), "wb") as f:
        f.write(b"+:alias:7790:2108:/var/qmail/alias:-::\n"
                b"+Joe-:joe:507:100:/home/joe:-::ignored\n"
                b"=Joe:joe:507:100:/home/joe:::\n"
                b"=joe:first:1:1:/x:::\n"
                b".\nafter the dot\n")
    done = newu(fresh_home)
    assert (done.returncode, done.stderr) == (0, b"")
    db = cdb.open_cdb(os.path.join(fresh_home, "users", "cdb").encode())
    assert db.items() == [
        (b"!", b"alias\x007790\x002108\x00/var/qmail/alias\x00-\x00"),
        (b"!joe-", b"joe\x00507\x00100\x00/home/joe\x00-\x00"),
        (b"!joe\0", b"joe\x00507\x00100\x00/home/joe\x00\x00"),
        (b"!joe\0", b"first\x001\x001\x00/x\x00\x00"),
        (b"", b"-"),
    ]
    st = os.stat(os.path.join(fresh_home, "users", "cdb"))
    assert st.st_mode & 0o777 == 0o644
    assert not os.path.exists(os.path.join(fresh_home, "users", "cdb.tmp"))


@pytest.mark.parametrize("assign", [b"=joe:joe:1:1:/h:::\n", b"=joe:joe:1:1:/h::\n.\n",
                                    b":x:1:1:/h:::\n.\n", b"nocolon\n.\n", b"=a\0:1:1:1:1:1:\n.\n"])
def test_newu_bad_format_keeps_old_cdb(fresh_home, assign):
    path = os.path.join(fresh_home, "users", "assign")
    with open(path, "wb") as f:
        f.write(b"=a:a:1:1:/a:::\n.\n")
    assert newu(fresh_home).returncode == 0
    old = open(os.path.join(fresh_home, "users", "cdb"), "rb").read()
    with open(path, "wb") as f:
        f.write(assign)
    done = newu(fresh_home)
    assert (done.returncode, done.stderr) == (111, b"qmail-newu: fatal: bad format in users/assign\n")
    assert open(os.path.join(fresh_home, "users", "cdb"), "rb").read() == old


def test_newu_missing_assign(fresh_home):
    done = newu(fresh_home)
    assert (done.returncode, done.stderr) == (111, b"qmail-newu: fatal: unable to open users/assign\n")


def pw2u(home, passwd, *args):
    return subprocess.run([os.path.join(home, "bin", "qmail-pw2u"), *args], input=passwd,
                          capture_output=True)


def test_pw2u_lines(fresh_home, accounts):
    made, joe, bob = accounts
    alias = AliasEntry(made)
    j = b"%s:x:%d:%d:gecos:%s:/bin/sh" % (joe.name.encode(), joe.uid, joe.gid, joe.home.encode())
    passwd = (b"root:x:0:0:root:/root:/bin/sh\n"
              b"alias:x:%d:%d::%s:/bin/false\n" % (alias.pw_uid, alias.pw_gid, alias.pw_dir.encode())
              + j + b"\n"
              b"Upper:x:1234:1234::/:/bin/sh\n"
              b"short:x:1\n"
              b"%s:x:%d:%d::%s:/bin/sh\n" % (bob.name.encode(), bob.uid, bob.gid, bob.home.encode())
              + b"gone:x:4321:4321::/nonexistent/home:/bin/sh")
    users = os.path.join(fresh_home, "users")
    with open(os.path.join(users, "subusers"), "wb") as f:
        f.write(b"sub:%s:pre:\nbad:%s\n" % (joe.name.encode(), joe.name.encode()))
    with open(os.path.join(users, "append"), "wb") as f:
        f.write(b"=extra:x:1:1:/x:::\n")
    done = pw2u(fresh_home, passwd)
    assert (done.returncode, done.stderr) == (0, b"")
    a = b":alias:%d:%d:%s:" % (alias.pw_uid, alias.pw_gid, alias.pw_dir.encode())
    u = b":%s:%d:%d:%s:" % (joe.name.encode(), joe.uid, joe.gid, joe.home.encode())
    n = joe.name.encode()
    assert done.stdout == (b"+" + a + b"-::\n=alias" + a + b"::\n+alias-" + a + b"-::\n"
                           + b"=" + n + u + b"::\n+" + n + b"-" + u + b"-::\n"
                           + b"=sub" + u + b"-:pre:\n+sub-" + u + b"-:pre-:\n"
                           + b"=extra:x:1:1:/x:::\n.\n")
    c = pw2u(fresh_home, passwd, "-C", "-/")
    assert c.stdout.startswith(b"+" + a + b"-/::\n=alias" + a + b"::\n=" + n + u + b"::\n=sub" + u
                               + b"-/:pre:\n=extra")
    h = pw2u(fresh_home, passwd, "-h")
    assert (h.returncode, h.stderr) == (111, b"qmail-pw2u: fatal: unable to stat /nonexistent/home\n")
    assert pw2u(fresh_home, passwd, "-x").returncode == 100


def test_pw2u_needs_alias(fresh_home):
    done = pw2u(fresh_home, b"joe:x:5:5::/:/bin/sh\n", "-H")
    assert (done.returncode, done.stderr) == (111, b"qmail-pw2u: fatal: unable to find alias user\n")


def test_pw2u_then_newu_round_trip(fresh_home, accounts):
    made, joe, _ = accounts
    alias = AliasEntry(made)
    passwd = b"alias:x:%d:%d::%s:/bin/false\n%s:x:%d:%d::%s:/bin/sh\n" % (
        alias.pw_uid, alias.pw_gid, alias.pw_dir.encode(), joe.name.encode(), joe.uid, joe.gid,
        joe.home.encode())
    out = pw2u(fresh_home, passwd).stdout
    with open(os.path.join(fresh_home, "users", "assign"), "wb") as f:
        f.write(out)
    assert newu(fresh_home).returncode == 0
    db = cdb.open_cdb(os.path.join(fresh_home, "users", "cdb").encode())
    assert db.get(b"!" + joe.name.encode() + b"\0") == b"%s\0%d\0%d\0%s\0\0" % (
        joe.name.encode(), joe.uid, joe.gid, joe.home.encode())
    assert db.get(b"") == b"-"


def test_pw2u_lists_are_constmaps(fresh_home):
    """constmap (qmail's map for users/mailnames and the subuser lookup) finds
    the last of repeated names, and a mailnames entry without `:` is no entry;
    `cid:` gives cid no mail names at all."""
    passwd = (b"alias:x:7:7::/a:/bin/false\njoe:x:5:5::/j1:/bin/sh\njoe:x:6:6::/j2:/bin/sh\n"
              b"bob:x:8:8::/b:/bin/sh\ncid:x:9:9::/c:/bin/sh\n")
    users = os.path.join(fresh_home, "users")
    with open(os.path.join(users, "mailnames"), "wb") as f:
        f.write(b"joe:first\nJOE:second:third\nbob\ncid:\n")
    with open(os.path.join(users, "subusers"), "wb") as f:
        f.write(b"sub:joe:pre:\n")
    done = pw2u(fresh_home, passwd, "-H", "-C")
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout == (b"+:alias:7:7:/a:-::\n=alias:alias:7:7:/a:::\n"
                           b"=second:joe:5:5:/j1:::\n=third:joe:5:5:/j1:::\n"
                           b"=second:joe:6:6:/j2:::\n=third:joe:6:6:/j2:::\n"
                           b"=bob:bob:8:8:/b:::\n"
                           b"=sub:joe:6:6:/j2:-:pre:\n.\n")
