"""make users / make setup check: the installed tree of spec/install.md §3."""
import contextlib
import grp
import os
import shutil
import stat
import subprocess

import pytest

from conftest import PYTHON, SRC, check, install, need_root, public_tmpdir, uid

SPLIT = 23


def expected_tree():
    """spec/install.md §3, written out independently of pyqmail.install."""
    q = grp.getgrnam("qmail").gr_gid
    root, qq, qs, qr, al = 0, uid("qmailq"), uid("qmails"), uid("qmailr"), uid("alias")
    d, f, p = stat.S_IFDIR, stat.S_IFREG, stat.S_IFIFO
    tree = {".": (d, root, 0o755)}
    for x in ("control", "users", "bin", "boot", "doc", "man"):
        tree[x] = (d, root, 0o755)
    for x in ("cat1", "cat5", "cat7", "cat8", "man1", "man5", "man7", "man8"):
        tree["man/" + x] = (d, root, 0o755)
    tree["alias"] = (d, al, 0o2755)
    tree["queue"] = (d, qq, 0o751)  # INSTALL: reachable socket, not listable
    tree["queue/pid"] = (d, qq, 0o700)
    tree["queue/intd"] = (d, qq, 0o700)
    tree["queue/todo"] = (d, qq, 0o750)
    tree["queue/bounce"] = (d, qs, 0o700)
    for base, owner, mode in (("mess", qq, 0o750), ("info", qs, 0o700),
                              ("local", qs, 0o700), ("remote", qs, 0o700)):
        tree["queue/" + base] = (d, owner, mode)
        for i in range(SPLIT):
            tree[f"queue/{base}/{i}"] = (d, owner, mode)
    tree["queue/lock"] = (d, qq, 0o751)
    tree["queue/lock/tcpto"] = (f, qr, 0o644)
    tree["queue/lock/tcpto6"] = (f, qr, 0o644)   # pyqmail's IPv6 table (INSTALL)
    tree["queue/lock/sendmutex"] = (f, qs, 0o600)
    tree["queue/lock/trigger"] = (p, qs, 0o622)
    for x in ("home", "home+df", "proc", "proc+df", "binm1", "binm1+df",
              "binm2", "binm2+df", "binm3", "binm3+df"):
        tree["boot/" + x] = (f, root, 0o755)
    # qmail's 0700 programs stay 0700, and pyqmail's checkpassword is root's
    # alone; every other program is 0755 (INSTALL)
    for x in os.listdir(os.path.join(SRC, "bin")):
        tree["bin/" + x] = (f, root, 0o700 if x in (
            "qmail-lspawn", "qmail-start", "qmail-newu", "qmail-newmrh",
            "checkpassword") else 0o755)
    return tree, q


def test_tree_matches_spec(qmail_home):
    tree, q = expected_tree()
    for path, (kind, owner, mode) in tree.items():
        st = os.lstat(os.path.join(qmail_home, path))
        assert (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == \
            (kind, owner, q, mode), path
    for table in ("tcpto", "tcpto6"):
        with open(os.path.join(qmail_home, "queue/lock", table), "rb") as f:
            assert f.read() == b"\0" * 1024
    assert os.path.getsize(os.path.join(qmail_home, "queue/lock/sendmutex")) == 0
    # setup creates nothing in control/, users/, alias/, and no rc
    for empty in ("control", "users", "alias"):
        assert os.listdir(os.path.join(qmail_home, empty)) == []
    assert not os.path.exists(os.path.join(qmail_home, "rc"))
    # nothing but what the spec lists (plus lib/ and doc/) under the queue
    for base in ("mess", "info", "local", "remote"):
        assert sorted(os.listdir(os.path.join(qmail_home, "queue", base)), key=int) == \
            [str(i) for i in range(SPLIT)]


def test_check_passes_on_a_good_tree(qmail_home):
    done = check(qmail_home)
    assert (done.returncode, done.stderr) == (0, b"")


def test_code_is_roots_alone(qmail_home):
    lib = os.path.join(qmail_home, "lib", "python")
    seen = 0
    for top, dirs, files in os.walk(lib):
        for name in [""] + files:
            st = os.lstat(os.path.join(top, name))
            assert st.st_uid == 0 and not st.st_mode & 0o022, os.path.join(top, name)
            seen += 1
    assert os.path.exists(os.path.join(lib, "pyqmail", "auto.py"))
    assert os.path.isdir(os.path.join(lib, "cdblib"))
    assert os.path.isdir(os.path.join(lib, "dns"))
    assert os.path.isdir(os.path.join(lib, "daemon"))
    assert seen > 100


def test_auto_carries_the_installation(qmail_home):
    out = subprocess.run([PYTHON, "-I", "-c",
                          "import sys; sys.path.insert(0, sys.argv[1]);"
                          "from pyqmail import auto; print(auto.QMAIL_HOME, auto.UID_QMAILQ, auto.SPLIT)",
                          os.path.join(qmail_home, "lib", "python")], capture_output=True)
    assert out.stdout.decode().split() == [repr(os.fsencode(qmail_home)), str(uid("qmailq")), "23"]


@pytest.mark.parametrize("path,change,warning", [
    ("queue/mess/3", lambda p: os.chmod(p, 0o755), "{home}/queue/mess/3 has wrong permissions"),
    ("queue/todo", lambda p: os.chown(p, 0, -1), "{home}/queue/todo has wrong owner"),
    ("bin/config-fast", lambda p: os.chmod(p, 0o4755), ".../bin/config-fast has wrong permissions"),
    ("queue/lock/trigger", lambda p: (os.unlink(p), open(p, "w").close()),
     "{home}/queue/lock/trigger has wrong type"),
    ("queue/bounce", lambda p: os.rmdir(p), "{home}/queue/bounce does not exist"),
    ("lib/python/pyqmail/control.py", lambda p: os.chmod(p, 0o666),
     "{home}/lib/python/pyqmail/control.py has wrong permissions"),
])
def test_make_check_names_each_mismatch(fresh_home, path, change, warning):
    change(os.path.join(fresh_home, path))
    done = subprocess.run(["make", "-s", "check", f"QMAIL_HOME={fresh_home}"], cwd=SRC,
                          capture_output=True)
    assert done.returncode != 0
    assert f"instcheck: warning: {warning.format(home=fresh_home)}\n" in done.stderr.decode()


def test_setup_repairs_modes(fresh_home):
    os.chmod(os.path.join(fresh_home, "queue/pid"), 0o777)
    assert install(fresh_home).returncode == 0
    assert check(fresh_home).returncode == 0


def copy_checkout(dest: str) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=SRC, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = os.path.join(os.fsencode(SRC), name)
        if not os.path.exists(src):
            continue
        target = os.path.join(os.fsencode(dest), name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(src, target)


def test_two_installations_side_by_side_survive_checkout_removal():
    need_root()
    base = public_tmpdir("pyqmail-two-")
    try:
        copy = os.path.join(base, "checkout")
        home_a, home_b = os.path.join(base, "a"), os.path.join(base, "b")
        copy_checkout(copy)
        done = subprocess.run(["make", "-s", "setup", "check", f"QMAIL_HOME={home_a}",
                               f"DEPS={SRC}/build/deps"], cwd=copy, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()
        assert install(home_b).returncode == 0
        shutil.rmtree(copy)
        for home, name in ((home_a, "a.example.com"), (home_b, "b.example.org")):
            out = subprocess.run([os.path.join(home, "bin", "config-fast"), name],
                                 capture_output=True, cwd="/")
            assert out.returncode == 0, out.stderr
        for home, name in ((home_a, "a.example.com"), (home_b, "b.example.org")):
            with open(os.path.join(home, "control", "me"), "rb") as f:
                assert f.read() == name.encode() + b"\n"
            with open(os.path.join(home, "control", "locals"), "rb") as f:
                assert f.read() == name.encode() + b"\n"
        for home in (home_a, home_b):
            assert check(home).returncode == 0
            with open(os.path.join(home, "bin", "config-fast"), "rb") as f:
                script = f.read()
            assert os.fsencode(home) + b"/lib/python" in script
            assert b"checkout" not in script
    finally:
        shutil.rmtree(base, ignore_errors=True)


HOSTILE_MODULE = """
import os
open({marker!r}, "a").write(__name__ + "\\n")
"""


def test_hostile_environment_cannot_change_the_code(fresh_home, tmp_path):
    marker = str(tmp_path / "marker")
    fake = tmp_path / "fake"
    (fake / "pyqmail").mkdir(parents=True)
    (fake / "cdblib").mkdir()
    for mod in ("pyqmail/__init__.py", "pyqmail/qmail_newmrh.py", "pyqmail/config_fast.py",
                "cdblib/__init__.py", "sitecustomize.py", "usercustomize.py", "os.py"):
        (fake / mod).write_text(HOSTILE_MODULE.format(marker=marker))
    startup = tmp_path / "startup.py"
    startup.write_text(HOSTILE_MODULE.format(marker=marker))
    os.chmod(tmp_path, 0o755)
    env = {"PYTHONPATH": str(fake), "PATH": "", "HOME": str(fake),
           "PYTHONSTARTUP": str(startup), "PYTHONHOME": str(fake),
           "PYTHONINSPECT": "1", "PYTHONUSERBASE": str(fake), "LC_ALL": "xx_XX.bogus"}
    control = os.path.join(fresh_home, "control")
    with open(os.path.join(control, "morercpthosts"), "wb") as f:
        f.write(b"Example.COM\n# comment\n.sub.example.net \n")
    newmrh = subprocess.run([os.path.join(fresh_home, "bin", "qmail-newmrh")], env=env,
                            cwd=str(fake), capture_output=True, stdin=subprocess.DEVNULL)
    assert (newmrh.returncode, newmrh.stderr) == (0, b"")
    fast = subprocess.run([os.path.join(fresh_home, "bin", "config-fast"), "h.example.com"],
                          env=env, cwd=str(fake), capture_output=True, stdin=subprocess.DEVNULL)
    assert fast.returncode == 0
    assert fast.stdout.startswith(b"Your fully qualified host name is h.example.com.\n")
    assert not os.path.exists(marker)
    from pyqmail import cdb
    db = cdb.open_cdb(os.fsencode(os.path.join(control, "morercpthosts.cdb")))
    assert db.items() == [(b"example.com", b""), (b".sub.example.net", b"")]


def test_make_users_is_idempotent():
    need_root()
    with open("/etc/passwd", "rb") as f:
        before = f.read()
    with open("/etc/group", "rb") as f:
        groups_before = f.read()
    done = subprocess.run(["make", "-s", "users"], cwd=SRC, capture_output=True)
    assert done.returncode == 0 and done.stdout == b""
    with open("/etc/passwd", "rb") as f:
        assert f.read() == before
    with open("/etc/group", "rb") as f:
        assert f.read() == groups_before
    import pwd
    for name, group in (("alias", "nofiles"), ("qmaild", "nofiles"), ("qmaill", "nofiles"),
                        ("qmailp", "nofiles"), ("qmailq", "qmail"), ("qmailr", "qmail"),
                        ("qmails", "qmail")):
        pw = pwd.getpwnam(name)
        assert pw.pw_gid == grp.getgrnam(group).gr_gid
        assert pw.pw_shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
        assert pw.pw_dir.endswith("/alias") == (name == "alias")


def links(home, other):
    return subprocess.run([PYTHON, "-m", "pyqmail.install", "links", home, other],
                          cwd=SRC, capture_output=True)


def test_debian_links_point_into_the_installation(qmail_home, tmp_path):
    other = str(tmp_path / "lib-qmail")
    os.makedirs(os.path.join(other, "bin"))
    os.symlink("/usr/bin/fastforward", os.path.join(other, "bin", "fastforward"))
    done = links(qmail_home, other)
    assert done.returncode == 0, done.stderr
    names = os.listdir(os.path.join(qmail_home, "bin"))
    for name in names:
        assert os.readlink(os.path.join(other, "bin", name)) == os.path.join(qmail_home, "bin", name)
    assert os.readlink(os.path.join(other, "control")) == os.path.join(qmail_home, "control")
    assert os.readlink(os.path.join(other, "bin", "fastforward")) == "/usr/bin/fastforward"
    assert (other + "/bin/qmail-queue -> " + qmail_home + "/bin/qmail-queue\n").encode() in done.stdout
    again = links(qmail_home, other)
    assert (again.returncode, again.stdout) == (0, b"")


def test_debian_links_refuse_to_replace_anything(qmail_home, tmp_path):
    other = str(tmp_path / "lib-qmail")
    os.makedirs(os.path.join(other, "control"))
    done = links(qmail_home, other)
    assert done.returncode == 1
    assert done.stderr == ("links: fatal: %s/control exists and is not a link to %s/control;"
                           " move it away first\n" % (other, qmail_home)).encode()
    assert not os.path.exists(os.path.join(other, "bin"))


def lsattr_flags(path):
    """lsattr -d's flag letters for path, None where the file system has none."""
    done = subprocess.run(["lsattr", "-d", path], capture_output=True)
    if done.returncode != 0:
        return None
    return done.stdout.split()[0].decode()


@contextlib.contextmanager
def scratch_filesystem(kind: str):
    """A file system of its own, mounted below /tmp for the test: ext4 (an
    image on a loop device, as these machines' root) or tmpfs."""
    def run(argv):
        done = subprocess.run(argv, capture_output=True)
        assert done.returncode == 0, (argv, done.stderr.decode())
    need_root()
    base = public_tmpdir("pyqmail-fs-")
    mnt = os.path.join(base, "mnt")
    os.mkdir(mnt)
    try:
        if kind == "ext4":
            image = os.path.join(base, "image")
            with open(image, "wb") as f:
                f.truncate(64 << 20)
            run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", image])
            run(["mount", "-o", "loop", image, mnt])
        else:
            run(["mount", "-t", "tmpfs", "tmpfs", mnt])
        try:
            os.chmod(mnt, 0o755)
            yield mnt
        finally:
            run(["umount", mnt])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_queue_directories_spread_their_subdirectories():
    # chattr +T (FS_TOPDIR_FL) on queue/ and the split directories, set before
    # their subdirectories were made; the leaves keep the default placement
    with scratch_filesystem("ext4") as mnt:
        home = os.path.join(mnt, "qmail")
        done = install(home)
        assert done.returncode == 0, done.stderr.decode()
        for top in ("queue", "queue/mess", "queue/info", "queue/local", "queue/remote"):
            assert "T" in lsattr_flags(os.path.join(home, top)), top
        for leaf in ("queue/pid", "queue/intd", "queue/todo", "queue/mess/0", "queue/info/22",
                     "queue/lock"):
            assert "T" not in lsattr_flags(os.path.join(home, leaf)), leaf
        assert "T" not in lsattr_flags(home)


def test_queue_on_a_file_system_without_the_flag():
    """tmpfs has no FS_TOPDIR_FL: the hint is left out and the queue installs
    whole, with its owners and modes."""
    with scratch_filesystem("tmpfs") as mnt:
        home = os.path.join(mnt, "qmail")
        done = install(home)
        assert done.returncode == 0, done.stderr.decode()
        assert done.stderr == b""
        queue = os.path.join(home, "queue")
        st = os.stat(queue)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid("qmailq"), 0o751)
        assert sorted(os.listdir(os.path.join(queue, "mess")), key=int) == [str(i) for i in range(SPLIT)]
        flags = lsattr_flags(queue)
        assert flags is None or "T" not in flags


def test_queue_on_another_disk_through_a_symlink():
    """An administrator's queue/ symlinked elsewhere installs as before, and
    the directory it points to is the one marked (+T where supported)."""
    need_root()
    base = public_tmpdir("pyqmail-home-")
    try:
        home = os.path.join(base, "qmail")
        os.makedirs(home)
        spool = os.path.join(base, "spool")
        os.mkdir(spool)
        os.symlink(spool, os.path.join(home, "queue"))
        done = install(home)
        assert done.returncode == 0, done.stderr.decode()
        assert os.path.islink(os.path.join(home, "queue"))
        st = os.stat(spool)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid("qmailq"), 0o751)
        assert sorted(os.listdir(os.path.join(spool, "mess")), key=int) == [str(i) for i in range(SPLIT)]
        flags = lsattr_flags(spool)
        assert flags is None or "T" in flags
    finally:
        shutil.rmtree(base, ignore_errors=True)
