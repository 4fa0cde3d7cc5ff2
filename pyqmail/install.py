"""`make setup` and `make check`: qmail's install and instcheck over one list (hier).

    python3 -m pyqmail.install setup QMAIL_HOME SOURCE_DIR DEPS_DIR PYTHON
    python3 -m pyqmail.install check QMAIL_HOME SOURCE_DIR
    python3 -m pyqmail.install links QMAIL_HOME OTHER_HOME

SOURCE_DIR is the checkout (conf-*, bin/, boot/, pyqmail/, docs); DEPS_DIR holds
the pure-Python dependencies installed with `pip --target`.  Everything is copied
under QMAIL_HOME, so the checkout may be deleted afterwards.

Deviations from qmail's modes, forced by running Python instead of C binaries
(INSTALL explains them): a script must be readable to run, so qmail's 0711
programs are 0755; Linux ignores the setuid bit on scripts, so qmail-queue is
root 0755 and the queue service (uid qmailq) writes the queue for it.
"""
import os
import shutil
import stat
import subprocess
import sys

from pyqmail import errors, fdio

FATAL = b"install: fatal: "
CHECK_WARNING = b"instcheck: warning: "

# program -> (owner role, mode); spec/install.md §3 with the deviations above.
PROGRAMS = {}
for _name in (b"qmail-lspawn", b"qmail-start", b"qmail-newu", b"qmail-newmrh",
              # pyqmail's checkpassword (Debian has none): root's alone, run by
              # qmail-popup as root
              b"checkpassword"):
    PROGRAMS[_name] = (b"owner", 0o700)
for _name in (
    # qmail's 0711 programs
    b"qmail-getpw", b"qmail-local", b"qmail-remote", b"qmail-rspawn",
    b"qmail-clean", b"qmail-send", b"splogger", b"qmail-pw2u", b"qmail-popup",
    # qmail's 0755 programs
    b"qmail-queue", b"qmail-inject", b"predate", b"datemail", b"mailsubj",
    b"qmail-showctl", b"qmail-qread", b"qmail-qstat", b"qmail-tcpto",
    b"qmail-tcpok", b"qmail-pop3d", b"qmail-qmqpc", b"qmail-qmqpd",
    b"qmail-qmtpd", b"qmail-smtpd", b"sendmail", b"tcp-env", b"qreceipt",
    b"qbiff", b"forward", b"preline", b"condredirect", b"bouncesaying",
    b"except", b"maildirmake", b"maildir2mbox", b"maildirwatch",
    # pyqmail's own: the configuration scripts qmail leaves in its build
    # directory, and the services pyqmail adds
    b"config", b"config-fast", b"qmail-queued", b"qmail-tcpsrv",
):
    PROGRAMS.setdefault(_name, (b"owner", 0o755))

# Directories whose subdirectories ext2/3/4 should spread over block groups
# (chattr +T: FS_TOPDIR_FL, for the Orlov allocator): queue/'s nine and each
# split directory's 23.  A file's inode comes from its directory's group, and
# without a journal ext4 skips every inode of that group freed in the last
# minute (recently_deleted()) on each creation: a queue that creates five and
# frees four inodes per message in one group makes every creation walk the
# thousands it freed last.  Spread, each group sees a share of them.
TOP_DIRS = (b"queue", b"queue/mess", b"queue/info", b"queue/local", b"queue/remote")
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_TOPDIR_FL = 0x00020000

BOOT_SCRIPTS = (b"home", b"home+df", b"proc", b"proc+df", b"binm1", b"binm1+df",
                b"binm2", b"binm2+df", b"binm3", b"binm3+df")
DOCS = (b"README.md", b"INSTALL", b"FAQ")


def first_line(path: bytes) -> bytes:
    with open(path, "rb") as f:
        return f.readline().strip()


class Conf:
    """The conf-* build settings of a checkout, with the uids they name."""

    def __init__(self, source: bytes):
        import grp
        import pwd
        with open(os.path.join(source, b"conf-users"), "rb") as f:
            users = [line.strip() for line in f.read().split(b"\n\n")[0].split(b"\n")]
        with open(os.path.join(source, b"conf-groups"), "rb") as f:
            groups = [line.strip() for line in f.read().split(b"\n\n")[0].split(b"\n")]
        if len(users) < 8 or len(groups) < 2:
            raise SystemExit("install: fatal: conf-users needs 8 names, conf-groups 2")
        self.user_names = dict(zip((b"alias", b"qmaild", b"qmaill", b"owner",
                                    b"qmailp", b"qmailq", b"qmailr", b"qmails"), users))
        self.group_names = {b"qmail": groups[0], b"nofiles": groups[1]}
        self.uid = {}
        self.gid = {}
        missing = []
        for role, name in self.user_names.items():
            try:
                self.uid[role] = pwd.getpwnam(name.decode()).pw_uid
            except KeyError:
                missing.append(name)
        for role, name in self.group_names.items():
            try:
                self.gid[role] = grp.getgrnam(name.decode()).gr_gid
            except KeyError:
                missing.append(name)
        if missing:
            raise SystemExit("install: fatal: missing users or groups (run make users): "
                             + " ".join(n.decode() for n in missing))
        self.split = int(first_line(os.path.join(source, b"conf-split")))
        self.spawn = int(first_line(os.path.join(source, b"conf-spawn")))
        self.patrn = int(first_line(os.path.join(source, b"conf-patrn")), 8)
        self.brk = first_line(os.path.join(source, b"conf-break"))[:1] or b"-"
        if not 1 <= self.spawn <= 255:
            raise SystemExit("install: fatal: conf-spawn must be 1..255")
        if self.split < 1:
            raise SystemExit("install: fatal: conf-split must be at least 1")


def programs(source: bytes) -> list[bytes]:
    """The programs the checkout has (one file each in bin/)."""
    names = sorted(os.listdir(os.path.join(source, b"bin")))
    unknown = [n for n in names if n not in PROGRAMS]
    if unknown:
        raise SystemExit("install: fatal: no mode for bin/" + unknown[0].decode())
    return names


def hier(conf: Conf, source: bytes) -> list[tuple]:
    """Every installed path: (kind, path, uid, gid, mode); qmail's hier.c."""
    u, q = conf.uid, conf.gid[b"qmail"]
    out = [(b"d", b".", u[b"owner"], q, 0o755)]
    for d in (b"control", b"users", b"bin", b"boot", b"doc", b"man", b"lib"):
        out.append((b"d", d, u[b"owner"], q, 0o755))
    for sec in (b"cat1", b"cat5", b"cat7", b"cat8", b"man1", b"man5", b"man7", b"man8"):
        out.append((b"d", b"man/" + sec, u[b"owner"], q, 0o755))
    out.append((b"d", b"alias", u[b"alias"], q, 0o2755))
    # queue/ and queue/lock/ are 0751, not qmail's 0750: every caller must reach
    # the queue service's socket queue/lock/qmail-queued (INSTALL, "Modes").
    out.append((b"d", b"queue", u[b"qmailq"], q, 0o751))
    out.append((b"d", b"queue/pid", u[b"qmailq"], q, 0o700))
    out.append((b"d", b"queue/intd", u[b"qmailq"], q, 0o700))
    out.append((b"d", b"queue/todo", u[b"qmailq"], q, 0o750))
    out.append((b"d", b"queue/bounce", u[b"qmails"], q, 0o700))
    for base, role, mode in ((b"queue/mess", b"qmailq", 0o750), (b"queue/info", b"qmails", 0o700),
                             (b"queue/local", b"qmails", 0o700), (b"queue/remote", b"qmails", 0o700)):
        out.append((b"d", base, u[role], q, mode))
        for i in range(conf.split):
            out.append((b"d", b"%s/%d" % (base, i), u[role], q, mode))
    out.append((b"d", b"queue/lock", u[b"qmailq"], q, 0o751))
    out.append((b"z", b"queue/lock/tcpto", u[b"qmailr"], q, 0o644))
    # pyqmail: IPv6 partners' timeouts, apart so tcpto stays qmail's format
    out.append((b"z", b"queue/lock/tcpto6", u[b"qmailr"], q, 0o644))
    out.append((b"e", b"queue/lock/sendmutex", u[b"qmails"], q, 0o600))
    out.append((b"p", b"queue/lock/trigger", u[b"qmails"], q, 0o622))
    for name in programs(source):
        role, mode = PROGRAMS[name]
        out.append((b"c", b"bin/" + name, u[role], q, mode))
    for name in BOOT_SCRIPTS:
        out.append((b"c", b"boot/" + name, u[b"owner"], q, 0o755))
    for name in DOCS:
        out.append((b"c", b"doc/" + name, u[b"owner"], q, 0o644))
    return out


def mark_top(path: bytes) -> None:
    """chattr +T path, where the file system has the flag; elsewhere nothing
    (tmpfs, xfs and btrfs place inodes their own way).  A hint only: no
    failure here stops the installation (a queue/ that is a symlink to
    another disk gets the flag on its target)."""
    import fcntl
    import struct
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        flags = bytearray(4)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags)
        value = struct.unpack("I", flags)[0]
        if not value & FS_TOPDIR_FL:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("I", value | FS_TOPDIR_FL))
    except OSError:
        return    # ENOTTY, EOPNOTSUPP: this file system has no such flag
    finally:
        os.close(fd)


def fatal(what: bytes, path: bytes, e: OSError) -> None:
    sys.stdout.flush()
    os.write(2, FATAL + b"unable to %s %s: %s\n" % (what, path, errors.error_str(e)))
    sys.exit(111)


def auto_module(conf: Conf, home: bytes, python: bytes) -> bytes:
    """pyqmail/auto.py for this installation: the values qmail compiles in."""
    lines = [b'"""Written by make setup: this installation\'s fixed values (qmail\'s auto_*)."""',
             b"QMAIL_HOME = %r" % home,
             b"SPLIT = %d" % conf.split,
             b"SPAWN = %d" % conf.spawn,
             b"PATRN = 0o%o" % conf.patrn,
             b"BREAK = %r" % conf.brk,
             b"PYTHON = %r" % python]
    for role in (b"alias", b"qmaild", b"qmaill", b"owner", b"qmailp", b"qmailq", b"qmailr", b"qmails"):
        lines.append(b"USER_%s = %r" % (role.upper(), conf.user_names[role]))
        lines.append(b"UID_%s = %d" % (role.upper(), conf.uid[role]))
    for role in (b"qmail", b"nofiles"):
        lines.append(b"GROUP_%s = %r" % (role.upper(), conf.group_names[role]))
        lines.append(b"GID_%s = %d" % (role.upper(), conf.gid[role]))
    return b"\n".join(lines) + b"\n"


def program_script(source: bytes, name: bytes, home: bytes, python: bytes) -> bytes:
    """An installed bin/ program: the isolated interpreter, the installed package
    directory first on sys.path, then the checkout's two lines (import, main())."""
    with open(os.path.join(source, b"bin", name), "rb") as f:
        body = [line for line in f.read().split(b"\n") if line and not line.startswith(b"#")]
    lib = os.path.join(home, b"lib", b"python")
    # -I: no PYTHON* variables, no user site, no script directory on sys.path;
    # -S: no site module at all.  The caller's environment cannot change the code.
    return b"\n".join([b"#!%s -IS" % python,
                       b"import sys",
                       b"sys.path.insert(0, %r)" % os.fsdecode(lib)] + body) + b"\n"


def boot_script(source: bytes, name: bytes, home: bytes) -> bytes:
    with open(os.path.join(source, b"boot", name), "rb") as f:
        return f.read().replace(b"@QMAIL_HOME@", home)


def write_file(path: bytes, data: bytes) -> None:
    """Replace path atomically (a running program never sees half a script)."""
    tmp = path + b".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fdio.write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        fatal(b"write", path, e)


def install_lib(home: bytes, source: bytes, deps: bytes, python: bytes, conf: Conf) -> None:
    """Copy the package and its dependencies to QMAIL_HOME/lib/python, owned by
    root and writable by root alone, and compile them there."""
    lib = os.path.join(home, b"lib")
    new = os.path.join(lib, b"python.new")
    old = os.path.join(lib, b"python.old")
    for d in (new, old):
        shutil.rmtree(d, ignore_errors=True)

    def ignore(directory, names):
        return [n for n in names if n in (b"__pycache__", "__pycache__")
                or os.fsencode(n).endswith(b".pyc")]

    shutil.copytree(os.path.join(source, b"pyqmail"), os.path.join(new, b"pyqmail"), ignore=ignore)
    for entry in sorted(os.listdir(deps)):
        if entry in (b"bin", b"__pycache__") or entry.startswith(b".") or entry.endswith(b".dist-info"):
            continue
        src = os.path.join(deps, entry)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(new, entry), ignore=ignore)
        else:
            shutil.copy2(src, os.path.join(new, entry))
    with open(os.path.join(new, b"pyqmail", b"auto.py"), "wb") as f:
        f.write(auto_module(conf, home, python))
    subprocess.run([python, b"-I", b"-m", b"compileall", b"-q", b"-j", b"0", new],
                   check=True, stdout=subprocess.DEVNULL)
    root, q = conf.uid[b"owner"], conf.gid[b"qmail"]
    for top, dirs, files in os.walk(new):
        os.chown(top, root, q)
        os.chmod(top, 0o755)
        for name in files:
            p = os.path.join(top, name)
            os.chown(p, root, q)
            os.chmod(p, 0o755 if name.endswith(b".so") else 0o644)
    current = os.path.join(lib, b"python")
    if os.path.exists(current):
        os.rename(current, old)
    os.rename(new, current)
    shutil.rmtree(old, ignore_errors=True)


def setup(home: bytes, source: bytes, deps: bytes, python: bytes) -> int:
    """qmail's install: create every path of hier, then chown and chmod it."""
    conf = Conf(source)
    os.umask(0o077)
    try:
        os.makedirs(home, 0o755, exist_ok=True)
    except OSError as e:
        fatal(b"mkdir", home, e)
    for kind, path, uid, gid, mode in hier(conf, source):
        full = os.path.normpath(os.path.join(home, path))
        if kind == b"d":
            try:
                os.mkdir(full, 0o700)
            except FileExistsError:
                pass
            except OSError as e:
                fatal(b"mkdir", full, e)
            if path in TOP_DIRS:    # before its subdirectories are made
                mark_top(full)
        elif kind == b"p":
            try:
                os.mkfifo(full, 0o600)
            except FileExistsError:
                pass
            except OSError as e:
                fatal(b"mkfifo", full, e)
        elif kind == b"z":
            write_file(full, b"\0" * 1024)
        elif kind == b"e":
            try:
                os.close(os.open(full, os.O_WRONLY | os.O_CREAT, 0o600))
            except OSError as e:
                fatal(b"write", full, e)
        elif kind == b"c":
            directory, name = path.split(b"/", 1)
            if directory == b"bin":
                data = program_script(source, name, home, python)
            elif directory == b"boot":
                data = boot_script(source, name, home)
            else:
                with open(os.path.join(source, name), "rb") as f:
                    data = f.read()
            write_file(full, data)
        try:
            os.chown(full, uid, gid)
        except OSError as e:
            fatal(b"chown", full, e)
        try:
            os.chmod(full, mode)
        except OSError as e:
            fatal(b"chmod", full, e)
    install_lib(home, source, deps, python, conf)
    return 0


def check(home: bytes, source: bytes) -> int:
    """qmail's instcheck: one warning per discrepancy; exit 1 if there was any
    (qmail's instcheck exits 0 on warnings; `make check` must fail loudly)."""
    conf = Conf(source)
    problems = 0

    def warn(path: bytes, what: bytes) -> None:
        nonlocal problems
        problems += 1
        os.write(2, CHECK_WARNING + path + what + b"\n")

    types = {b"d": stat.S_IFDIR, b"p": stat.S_IFIFO, b"z": stat.S_IFREG,
             b"e": stat.S_IFREG, b"c": stat.S_IFREG}
    for kind, path, uid, gid, mode in hier(conf, source):
        full = os.path.normpath(os.path.join(home, path))
        shown = b".../" + path if kind == b"c" else full
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            warn(shown, b" does not exist")
            continue
        except OSError as e:
            warn(shown, b": unable to stat: " + errors.error_str(e))
            continue
        if st.st_uid != uid:
            warn(shown, b" has wrong owner")
        if st.st_gid != gid:
            warn(shown, b" has wrong group")
        if stat.S_IMODE(st.st_mode) != mode:
            warn(shown, b" has wrong permissions")
        if stat.S_IFMT(st.st_mode) != types[kind]:
            warn(shown, b" has wrong type")
    # Code that root runs, and everything it imports: root's alone.
    lib = os.path.join(home, b"lib", b"python")
    if not os.path.isdir(lib):
        warn(lib, b" does not exist")
    for top, dirs, files in os.walk(lib):
        for name in [b""] + files:
            p = os.path.join(top, name) if name else top
            st = os.lstat(p)
            if st.st_uid != conf.uid[b"owner"]:
                warn(p, b" has wrong owner")
            if st.st_mode & 0o022 or stat.S_ISLNK(st.st_mode):
                warn(p, b" has wrong permissions")
    return 1 if problems else 0


def links(home: bytes, other: bytes) -> int:
    """Make OTHER_HOME/bin/PROGRAM and OTHER_HOME/control symlinks into QMAIL_HOME, for
    programs built with another qmail home compiled in (Debian's fastforward and
    dot-forward chdir to /var/lib/qmail, run bin/qmail-queue and read control/).
    Nothing is replaced: an entry that is not already our link stops everything."""
    wanted = [(os.path.join(other, b"bin", name), os.path.join(home, b"bin", name))
              for name in sorted(os.listdir(os.path.join(home, b"bin")))]
    wanted.append((os.path.join(other, b"control"), os.path.join(home, b"control")))
    todo = []
    for link, target in wanted:
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link):
            os.write(2, b"links: fatal: %s exists and is not a link to %s; move it away first\n"
                     % (link, target))
            return 1
        todo.append((link, target))
    for link, target in todo:
        try:
            os.makedirs(os.path.dirname(link), 0o755, exist_ok=True)
            os.symlink(target, link)
        except OSError as e:
            fatal(b"symlink", link, e)
        os.write(1, b"%s -> %s\n" % (link, target))
    return 0


def main() -> None:
    args = [os.fsencode(a) for a in sys.argv[1:]]
    if len(args) >= 3 and args[0] == b"check":
        sys.exit(check(os.path.abspath(args[1]), args[2]))
    if len(args) == 5 and args[0] == b"setup":
        home = args[1]
        if not home.startswith(b"/"):
            raise SystemExit("install: fatal: QMAIL_HOME must be an absolute path")
        sys.exit(setup(os.path.normpath(home), args[2], args[3], args[4]))
    if len(args) == 3 and args[0] == b"links" and args[1].startswith(b"/") and args[2].startswith(b"/"):
        sys.exit(links(os.path.normpath(args[1]), os.path.normpath(args[2])))
    raise SystemExit("usage: python3 -m pyqmail.install setup QMAIL_HOME SOURCE DEPS PYTHON"
                     " | check QMAIL_HOME SOURCE | links QMAIL_HOME OTHER_HOME")


if __name__ == "__main__":
    main()
