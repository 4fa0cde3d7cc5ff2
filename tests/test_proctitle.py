"""proctitle.rename(): comm and the command line of a forked child, through
/proc while the process may write its own /proc files, through libc once it
has changed its uid (its /proc files then belong to root)."""
import os

from conftest import in_child, need_root, uid
from pyqmail import proctitle, prot


def renamed(drop: bool) -> bytes:
    def body():
        if drop:
            prot.drop(uid("qmaild"), uid("qmaild"))
        title = proctitle.Title()
        fds = sorted(os.listdir("/proc/self/fd"))
        ok = proctitle.rename(title, [b"bin/qmail-local", b"--", b"joe\0x@example.org"])
        with open("/proc/self/comm", "rb") as f:
            comm = f.read()
        with open("/proc/self/cmdline", "rb") as f:
            cmdline = f.read()
        left = sorted(os.listdir("/proc/self/fd")) == fds
        return b"%r %r %r %r %r" % (title.proc, ok, left, comm, cmdline.rstrip(b"\0"))
    return in_child(body)


def test_rename_through_proc():
    need_root()
    assert renamed(False) == b"True True True b'qmail-local\\n' b'bin/qmail-local\\x00--\\x00joex@example.org'"


def test_rename_after_a_uid_change_goes_through_libc():
    need_root()
    assert renamed(True) == b"False True True b'qmail-local\\n' b'bin/qmail-local\\x00--\\x00joex@example.org'"


def test_the_command_line_is_cut_to_the_argument_area():
    def body():
        title = proctitle.Title()
        start, end = proctitle.arg_area()
        proctitle.rename(title, [b"x" * (2 * (end - start))])
        with open("/proc/self/cmdline", "rb") as f:
            return b"%d %d" % (len(f.read().rstrip(b"\0")), end - start - 1)
    got, room = in_child(body).split()
    assert got == room
