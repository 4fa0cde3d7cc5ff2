"""Renaming a forked child to the program it becomes (INTERFACE.md §3: a child
forked without exec to run another program's code shows that program's name in
/proc as its comm and argv[0]).

comm is written to /proc/thread-self/comm (prctl(PR_SET_NAME) without /proc);
the command line is overwritten in place, in the memory the kernel reports as
the argument area (/proc/self/stat fields 48-49), through /proc/self/mem (a
memmove without /proc), as setproctitle(3) does: no privilege needed, but the
new command line is cut to the length of the old one and padded with NULs.

The /proc route is the cheap one in a forked child: ctypes' Python code, run
for the first time after the fork, costs the child a copy of every page it
touches.
"""
import ctypes
import os

PR_SET_NAME = 15


class Title:
    """What renaming a child needs, prepared once in a long-running parent
    before its first fork: libc's prctl (resolved here, not in every child),
    the argument area (the same in every child) and whether /proc lets the
    children write (not once the process has changed its uid: its /proc files
    then belong to root)."""

    def __init__(self):
        self.area = arg_area()
        try:
            os.close(os.open(b"/proc/self/mem", os.O_WRONLY | os.O_CLOEXEC))
            self.proc = True
        except OSError:
            self.proc = False
        self.lib = ctypes.CDLL(None, use_errno=True)
        self.lib.prctl.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong,
                                   ctypes.c_ulong, ctypes.c_ulong)


def arg_area() -> tuple[int, int] | None:
    """(arg_start, arg_end) of this process, None when /proc does not say."""
    try:
        with open(b"/proc/self/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    try:
        start, end = int(fields[45]), int(fields[46])
    except (IndexError, ValueError):
        return None
    return (start, end) if 0 < start < end else None


def rename(title: Title, argv: list[bytes]) -> bool:
    """Set comm to basename(argv[0]) and the command line to argv (as much as
    fits); False if the command line could not be changed."""
    name = argv[0].rpartition(b"/")[2].partition(b"\0")[0][:15]
    if not (title.proc and write_proc(b"/proc/thread-self/comm", name, 0)):
        title.lib.prctl(PR_SET_NAME, name, 0, 0, 0)
    if title.area is None:
        return False
    start, end = title.area
    size = end - start
    block = b"\0".join([a.replace(b"\0", b"") for a in argv])[:size - 1]
    block += bytes(size - len(block))
    if not (title.proc and write_proc(b"/proc/self/mem", block, start)):
        ctypes.memmove(start, block, size)
    return True


def write_proc(path: bytes, data: bytes, offset: int) -> bool:
    """Write all of data at offset of a /proc file of this process; False if
    that cannot be done (then the caller asks libc)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.pwrite(fd, data, offset) == len(data)
    except OSError:
        return False
    finally:
        os.close(fd)
