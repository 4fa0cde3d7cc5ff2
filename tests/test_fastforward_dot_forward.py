"""Debian's fastforward and dot-forward (D. J. Bernstein's programs, packaged for
Debian's qmail) running on pyqmail installed at /var/qmail, through the whole
qmail-start tree: sendmail-style /etc/aliases through ~alias/.qmail-default, and
~/.forward through the home+df default delivery.

The packages have /var/lib/qmail compiled in: they chdir there, run
bin/qmail-queue and read control/me, defaulthost, defaultdomain, plusdomain.
`make debian-links` (pyqmail.install links) points those names at /var/qmail."""
import fcntl
import os
import pwd
import re
import shutil
import subprocess

import pytest

from conftest import PYTHON, SRC, install, need_root, public_tmpdir, uid, wait_for
from localusers import Users
from test_qmail_start import Tree, queue_as

HOME = "/var/qmail"
DEBIAN_HOME = "/var/lib/qmail"
ME = "host.example.com"
FASTFORWARD = "/usr/bin/fastforward"
NEWALIASES = "/usr/sbin/qmail-newaliases"
DOT_FORWARD = "/usr/bin/dot-forward"
MESSAGE = b"From: sender@example.org\nSubject: aliases\n\nline one\n\nline two\n"
RECEIVED = rb"Received: \(qmail \d+ invoked %s\); \d+ [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000\n"


def lexists_all(paths):
    return {p for p in paths if os.path.lexists(p)}


@pytest.fixture(scope="module")
def var_qmail():
    """pyqmail at /var/qmail (installed from this checkout), the /var/lib/qmail
    links, and control/ for host.example.com; everything put back afterwards."""
    need_root()
    for program in (FASTFORWARD, NEWALIASES, DOT_FORWARD):
        if not os.access(program, os.X_OK):
            pytest.fail(f"{program} missing: apt-get install fastforward dot-forward (make test-deps)")
    if os.path.lexists(HOME) and not os.path.isdir(os.path.join(HOME, "lib/python/pyqmail")):
        pytest.fail(f"{HOME} exists and is not a pyqmail installation (no {HOME}/lib/python/pyqmail);"
                    " these tests install pyqmail there and will not overwrite another qmail")
    created = not os.path.lexists(HOME)
    mutex = os.path.join(HOME, "queue/lock/sendmutex")
    if not created and os.path.exists(mutex):
        fd = os.open(mutex, os.O_WRONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pytest.fail(f"a qmail-send is running for {HOME} (make stop first)")
        finally:
            os.close(fd)
    control = os.path.join(HOME, "control")
    saved = None
    if os.path.isdir(control):
        saved = control + ".pyqmail-test-saved"
        if os.path.lexists(saved):
            pytest.fail(f"{saved} exists: an earlier run was interrupted; move it back to {control}")
        os.rename(control, saved)
    alias_home = pwd.getpwnam("alias").pw_dir
    dot_default = os.path.join(alias_home, ".qmail-default")
    old_default = None
    if os.path.lexists(dot_default):
        old_default = dot_default + ".pyqmail-test-saved"
        os.rename(dot_default, old_default)
    made_links = set()
    try:
        done = install(HOME)
        assert done.returncode == 0, done.stderr.decode()
        subprocess.run([os.path.join(HOME, "bin", "config-fast"), ME], check=True, capture_output=True)
        candidates = [os.path.join(DEBIAN_HOME, "bin", n) for n in os.listdir(os.path.join(HOME, "bin"))]
        candidates.append(os.path.join(DEBIAN_HOME, "control"))
        before = lexists_all(candidates)
        done = subprocess.run([PYTHON, "-m", "pyqmail.install", "links", HOME, DEBIAN_HOME],
                              cwd=SRC, capture_output=True)
        made_links = lexists_all(candidates) - before
        assert done.returncode == 0, done.stderr.decode()
        assert os.readlink(os.path.join(DEBIAN_HOME, "bin/qmail-queue")) == HOME + "/bin/qmail-queue"
        assert os.readlink(os.path.join(DEBIAN_HOME, "control")) == control
        yield HOME
    finally:
        for link in made_links:
            os.unlink(link)
        if os.path.lexists(dot_default):
            os.unlink(dot_default)
        if old_default:
            os.rename(old_default, dot_default)
        if created:
            shutil.rmtree(HOME, ignore_errors=True)
        elif saved:
            shutil.rmtree(control, ignore_errors=True)
            os.rename(saved, control)


@pytest.fixture
def users():
    u = Users()
    yield u
    u.cleanup()


@pytest.fixture
def scratch():
    path = public_tmpdir("pyqmail-aliases-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_tree(home, default="./Maildir/"):
    tree = Tree(home, default=default)
    tree.wait_log(rb"^status: local 0/10 remote 0/20$")
    wait_for(lambda: os.path.exists(os.path.join(home, "queue/lock/qmail-queued")))
    return tree


@pytest.fixture
def stop_trees():
    """Trees started by a test, stopped (SIGTERM, then waited for) after it."""
    trees = []
    yield trees
    for t in trees:
        t.stop()


def newaliases(aliases: bytes, cdb_path: str, workdir: str) -> subprocess.CompletedProcess:
    """The package's newaliases on `aliases`, leaving the real /etc alone: it only
    knows /etc/aliases and /etc/aliases.cdb, so it runs in a private mount
    namespace with an overlay on /etc; the cdb it makes is copied to cdb_path."""
    source = os.path.join(workdir, "aliases")
    with open(source, "wb") as f:
        f.write(aliases)
    upper, work = os.path.join(workdir, "upper"), os.path.join(workdir, "work")
    os.mkdir(upper)
    os.mkdir(work)
    script = ('mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc || exit 90\n'
              'cp "$3" /etc/aliases && "$5" && cp /etc/aliases.cdb "$4"')
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                           "sh", upper, work, source, cdb_path, NEWALIASES], capture_output=True)
    if done.returncode == 90:
        pytest.fail("cannot mount an overlay on /etc in a mount namespace: " + done.stderr.decode())
    shutil.rmtree(upper, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return done


def only_message(maildir: str, timeout=30.0) -> bytes:
    new = os.path.join(maildir, "new")
    wait_for(lambda: os.listdir(new), timeout)
    (name,) = os.listdir(new)
    with open(os.path.join(new, name), "rb") as f:
        return f.read()


def test_fastforward_aliases_to_a_user_maildir(var_qmail, users, scratch, stop_trees):
    joe = users.make("ffj")
    joe.maildir()
    cdb_path = os.path.join(scratch, "aliases.cdb")
    # unqualified joe is qualified by newaliases from /var/lib/qmail/control (the link)
    done = newaliases(b"# pyqmail test aliases\npqstaff: %s\npqboss:\n  pqstaff\n"
                      % joe.name.encode(), cdb_path, scratch)
    assert done.returncode == 0, done.stderr.decode()
    os.chmod(cdb_path, 0o644)
    printed = subprocess.run(["printforward"], stdin=open(cdb_path, "rb"), capture_output=True)
    assert b"%s@%s" % (joe.name.encode(), ME.encode()) in printed.stdout
    alias_home = pwd.getpwnam("alias").pw_dir
    with open(os.path.join(alias_home, ".qmail-default"), "wb") as f:
        f.write(b"|fastforward -d %s\n" % cdb_path.encode())
    os.chmod(os.path.join(alias_home, ".qmail-default"), 0o644)
    tree = start_tree(var_qmail)
    stop_trees.append(tree)
    assert queue_as(var_qmail, "nobody", MESSAGE,
                    b"Fsender@example.org\0Tpqboss@%s\0\0" % ME.encode()) == 0
    data = only_message(os.path.join(joe.home, "Maildir"))
    # pqboss -> pqstaff@host.example.com (a new message: the user@ wildcard
    # applies only to the incoming address) -> ~alias again -> joe
    pattern = (b"Return-Path: <sender@example.org>\n"
               b"Delivered-To: %s@%s\n" % (joe.name.encode(), ME.encode())
               + RECEIVED % b"by alias"
               + b"Delivered-To: pqstaff@%s\n" % ME.encode()
               + RECEIVED % b"by alias"
               + b"Delivered-To: pqboss@%s\n" % ME.encode()
               + RECEIVED % (b"by uid %d" % uid("nobody"))
               + re.escape(MESSAGE))
    assert re.fullmatch(pattern, data), data.decode()
    # qmail-local reports what fastforward printed: its qmail-queue's qp
    log = tree.wait_log(rb"delivery \d+: success: did_1\+0\+0/$").decode()
    for local in ("pqboss", "pqstaff"):
        num = re.search(r"^starting delivery (\d+): msg \d+ to local %s@host\.example\.com$" % local,
                        log, re.M).group(1)
        assert re.search(r"^delivery %s: success: fastforward:_qp_\d+/did_0\+0\+1/$" % num, log, re.M)
    # the qp fastforward printed is its qmail-queue's: qmail-send's info line and
    # the Received line name the same number, as with qmail
    printed = set(re.findall(r"success: fastforward:_qp_(\d+)/", log))
    logged = set(re.findall(r"^info msg \d+: bytes \d+ from <sender@example\.org> qp (\d+) uid %d$"
                            % uid("alias"), log, re.M))
    received = set(re.findall(r"Received: \(qmail (\d+) invoked by alias\)", data.decode()))
    assert len(printed) == 2 and printed == logged == received, (printed, logged, received)


def test_fastforward_bounces_an_unknown_alias(var_qmail, users, scratch, stop_trees):
    joe = users.make("ffb")
    joe.maildir()
    cdb_path = os.path.join(scratch, "aliases.cdb")
    done = newaliases(b"pqstaff: %s\n" % joe.name.encode(), cdb_path, scratch)
    assert done.returncode == 0, done.stderr.decode()
    os.chmod(cdb_path, 0o644)
    alias_home = pwd.getpwnam("alias").pw_dir
    with open(os.path.join(alias_home, ".qmail-default"), "wb") as f:
        f.write(b"|fastforward -d %s\n" % cdb_path.encode())
    os.chmod(os.path.join(alias_home, ".qmail-default"), 0o644)
    tree = start_tree(var_qmail)
    stop_trees.append(tree)
    sender = b"%s@%s" % (joe.name.encode(), ME.encode())
    assert queue_as(var_qmail, "nobody", MESSAGE, b"F%s\0Tpqnosuch@%s\0\0" % (sender, ME.encode())) == 0
    bounce = only_message(os.path.join(joe.home, "Maildir"))
    tree.wait_log(rb"^delivery \d+: failure: Sorry,_no_mailbox_here_by_that_name._\(#5.1.1\)/$")
    # fastforward's exit 100 and its text, in qmail-send's bounce
    assert bounce.startswith(b"Return-Path: <>\nDelivered-To: %s\n" % sender)
    body = bounce.split(b"\n\n", 1)[1]
    assert re.fullmatch(
        b"Hi. This is the qmail-send program at host.example.com.\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        b"<pqnosuch@host.example.com>:\n"
        b"Sorry, no mailbox here by that name. \\(#5.1.1\\)\n\n"
        b"--- Below this line is a copy of the message.\n\n"
        b"Return-Path: <%s>\n" % re.escape(sender)
        + RECEIVED % (b"by uid %d" % uid("nobody")) + re.escape(MESSAGE), body), body.decode()


DOT_FORWARD_DEFAULT = "|dot-forward .forward\n./Maildir/"  # boot/home+df, with Maildir


def test_dot_forward_forwards_and_runs_a_program(var_qmail, users, stop_trees):
    ann = users.make("dfa")
    bob = users.make("dfb")
    for u in (ann, bob):
        u.maildir()
    # bob unqualified: dot-forward qualifies it from /var/lib/qmail/control
    ann.write(".forward", b"# forwarding\n%s, \"|cat > prog.out\"\n" % bob.name.encode(), 0o644)
    tree = start_tree(var_qmail, DOT_FORWARD_DEFAULT)
    stop_trees.append(tree)
    assert queue_as(var_qmail, "nobody", MESSAGE,
                    b"Fsender@example.org\0T%s@%s\0\0" % (ann.name.encode(), ME.encode())) == 0
    data = only_message(os.path.join(bob.home, "Maildir"))
    assert re.fullmatch(b"Return-Path: <sender@example.org>\n"
                        b"Delivered-To: %s@%s\n" % (bob.name.encode(), ME.encode())
                        + RECEIVED % (b"by uid %d" % ann.uid)
                        + b"Delivered-To: %s@%s\n" % (ann.name.encode(), ME.encode())
                        + RECEIVED % (b"by uid %d" % uid("nobody"))
                        + re.escape(MESSAGE), data), data.decode()
    # bob has no .forward: dot-forward exits 0, then ./Maildir/
    log = tree.wait_log(rb"^delivery \d+: success: did_1\+0\+1/$").decode()
    num = re.search(r"^starting delivery (\d+): msg \d+ to local %s@host\.example\.com$" % ann.name,
                    log, re.M).group(1)
    # dot-forward exits 99: the ./Maildir/ line is skipped, qmail-local counts one program
    qp = re.search(r"^delivery %s: success: dot-forward:_info:_qp_(\d+)/did_0\+0\+1/$" % num,
                   log, re.M).group(1)
    assert re.search(r"^info msg \d+: bytes \d+ from <sender@example\.org> qp %s uid %d$" % (qp, ann.uid),
                     log, re.M)
    assert b"Received: (qmail %s invoked by uid %d); " % (qp.encode(), ann.uid) in data
    assert os.listdir(os.path.join(ann.home, "Maildir", "new")) == []
    # the program ran as ann in her home, fed UFLINE, RPLINE, DTLINE and the message
    path = os.path.join(ann.home, "prog.out")
    wait_for(lambda: os.path.exists(path))
    st = os.stat(path)
    assert (st.st_uid, st.st_gid) == (ann.uid, ann.gid)
    with open(path, "rb") as f:
        out = f.read()
    assert re.fullmatch(rb"From sender@example\.org [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\n"
                        b"Return-Path: <sender@example.org>\n"
                        b"Delivered-To: %s@%s\n" % (ann.name.encode(), ME.encode())
                        + RECEIVED % (b"by uid %d" % uid("nobody"))
                        + re.escape(MESSAGE), out), out.decode()


def test_dot_forward_without_forward_file_delivers_to_maildir(var_qmail, users, stop_trees):
    bob = users.make("dfn")
    bob.maildir()
    tree = start_tree(var_qmail, DOT_FORWARD_DEFAULT)
    stop_trees.append(tree)
    assert queue_as(var_qmail, "nobody", MESSAGE,
                    b"Fsender@example.org\0T%s@%s\0\0" % (bob.name.encode(), ME.encode())) == 0
    data = only_message(os.path.join(bob.home, "Maildir"))
    assert re.fullmatch(b"Return-Path: <sender@example.org>\n"
                        b"Delivered-To: %s@%s\n" % (bob.name.encode(), ME.encode())
                        + RECEIVED % (b"by uid %d" % uid("nobody"))
                        + re.escape(MESSAGE), data), data.decode()
    # no .forward: dot-forward exits 0 and qmail-local goes on to ./Maildir/
    tree.wait_log(rb"^delivery \d+: success: did_1\+0\+1/$")


def test_dot_forward_keeps_a_copy_for_the_user_named_in_forward(var_qmail, users, stop_trees):
    carol = users.make("dfc")
    bob = users.make("dfd")
    for u in (carol, bob):
        u.maildir()
    carol.write(".forward", b"\\%s, %s@%s\n" % (carol.name.encode(), bob.name.encode(), ME.encode()),
                0o644)
    tree = start_tree(var_qmail, DOT_FORWARD_DEFAULT)
    stop_trees.append(tree)
    assert queue_as(var_qmail, "nobody", MESSAGE,
                    b"Fsender@example.org\0T%s@%s\0\0" % (carol.name.encode(), ME.encode())) == 0
    kept = only_message(os.path.join(carol.home, "Maildir"))
    forwarded = only_message(os.path.join(bob.home, "Maildir"))
    assert re.fullmatch(b"Return-Path: <sender@example.org>\n"
                        b"Delivered-To: %s@%s\n" % (carol.name.encode(), ME.encode())
                        + RECEIVED % (b"by uid %d" % uid("nobody"))
                        + re.escape(MESSAGE), kept), kept.decode()
    assert re.fullmatch(b"Return-Path: <sender@example.org>\n"
                        b"Delivered-To: %s@%s\n" % (bob.name.encode(), ME.encode())
                        + RECEIVED % (b"by uid %d" % carol.uid)
                        + b"Delivered-To: %s@%s\n" % (carol.name.encode(), ME.encode())
                        + RECEIVED % (b"by uid %d" % uid("nobody"))
                        + re.escape(MESSAGE), forwarded), forwarded.decode()
    # \carol is carol herself: dot-forward forwards to bob and exits 0, so
    # qmail-local goes on to ./Maildir/
    log = tree.wait_log(rb"^delivery \d+: success: dot-forward:_info:_qp_\d+/did_1\+0\+1/$").decode()
    assert re.search(r"^starting delivery 1: msg \d+ to local %s@host\.example\.com$" % carol.name,
                     log, re.M)
