"""proctitle.rename(): comm and the command line of a forked child, as root
and once it has changed its uid (its /proc files then belong to root), with
what its parent prepared or without."""
import os

from conftest import in_child, need_root, uid
from pyqmail import proctitle, prot


ARGV = [b"bin/qmail-local", b"--", b"joe\0x@example.org"]
RENAMED = b"True True b'qmail-local\\n' b'bin/qmail-local\\x00--\\x00joex@example.org'"


def renamed(drop: bool, prepare: bool) -> bytes:
    def body():
        if drop:
            prot.drop(uid("qmaild"), uid("qmaild"))
        title = proctitle.Title()
        if prepare:
            title.prepare(ARGV)
        fds = sorted(os.listdir("/proc/self/fd"))
        ok = proctitle.rename(title, ARGV)
        with open("/proc/self/comm", "rb") as f:
            comm = f.read()
        with open("/proc/self/cmdline", "rb") as f:
            cmdline = f.read()
        left = sorted(os.listdir("/proc/self/fd")) == fds
        return b"%r %r %r %r" % (ok, left, comm, cmdline.rstrip(b"\0"))
    return in_child(body)


def test_rename_as_root():
    need_root()
    assert renamed(False, False) == RENAMED


def test_rename_after_a_uid_change():
    need_root()
    assert renamed(True, False) == RENAMED


def test_rename_prepared_in_the_parent():
    need_root()
    assert renamed(True, True) == RENAMED


def test_a_prepared_title_renames_each_child_alike():
    """Title.prepare() in a parent, rename() in two of its children: the same
    name and command line in both, and the parent keeps its own."""
    def body():
        title = proctitle.Title()
        title.prepare([b"qmail-smtpd"])
        with open("/proc/self/cmdline", "rb") as f:
            before = f.read()
        seen = []
        for _ in range(2):
            seen.append(in_child(lambda: b"%r %s" % (
                proctitle.rename(title, [b"qmail-smtpd"]),
                open("/proc/self/comm", "rb").read().strip()
                + b" " + open("/proc/self/cmdline", "rb").read().rstrip(b"\0"))))
        with open("/proc/self/cmdline", "rb") as f:
            after = f.read()
        return b"|".join(seen) + (b"|kept" if after == before else b"|changed")
    assert in_child(body) == b"True qmail-smtpd qmail-smtpd|True qmail-smtpd qmail-smtpd|kept"


def test_the_command_line_is_cut_to_the_argument_area():
    def body():
        title = proctitle.Title()
        start, end = proctitle.arg_area()
        proctitle.rename(title, [b"x" * (2 * (end - start))])
        with open("/proc/self/cmdline", "rb") as f:
            return b"%d %d" % (len(f.read().rstrip(b"\0")), end - start - 1)
    got, room = in_child(body).split()
    assert got == room


def test_rename_through_proc_without_ctypes():
    """A process whose /proc files are its own renames itself with no ctypes;
    one that changed its uid (its /proc files are root's) is told it cannot."""
    need_root()

    def body(drop):
        def run():
            if drop:
                prot.drop(uid("qmaild"), uid("qmaild"))
            ok = proctitle.rename_through_proc(ARGV)
            with open("/proc/self/comm", "rb") as f:
                comm = f.read()
            with open("/proc/self/cmdline", "rb") as f:
                cmdline = f.read()
            return b"%r %r %r" % (ok, comm, cmdline.rstrip(b"\0").split(b"\0")[0])
        return run
    assert in_child(body(False)) == b"True b'qmail-local\\n' b'bin/qmail-local'"
    assert in_child(body(True)).startswith(b"False ")
    assert b"qmail-local" not in in_child(body(True))
