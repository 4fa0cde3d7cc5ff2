"""Renaming a forked child to the program it becomes (INTERFACE.md §3: a child
forked without exec to run another program's code shows that program's name in
/proc as its comm and argv[0]).

comm is set with prctl(PR_SET_NAME); the command line is overwritten in place,
in the memory the kernel reports as the argument area (/proc/self/stat fields
48-49), as setproctitle(3) does: no privilege needed, but the new command line
is cut to the length of the old one and padded with NULs.

Both go through ctypes objects a long-running parent makes before its first
fork (Title, Title.prepare): ctypes' argument conversion, run in each child,
cost it a copy of every page it touched (about 90 pages and 200 us a child
against 20 and 45 us: prctl called without argtypes or errno, the argument
area written as a ctypes char array).

A process that runs another program's code instead of exec'ing it, and has
never changed its uid, writes its own /proc files instead (rename_through_proc):
no ctypes to import (3 ms).
"""
import os

PR_SET_NAME = 15


class Title:
    """What renaming a child needs, made once in its parent: libc's prctl, the
    argument area (the same in every child) as a ctypes char array, and the
    comm and command line of the argvs prepare() was given."""

    def __init__(self):
        import ctypes
        area = arg_area()
        self.argv_area = None
        if area is not None:
            start, end = area
            self.argv_area = (ctypes.c_char * (end - start)).from_address(start)
        self.prctl = ctypes.CDLL(None).prctl   # PR_SET_NAME needs no errno
        self.prepared: dict[tuple[bytes, ...], tuple] = {}   # argv: (C string, area bytes)

    def prepare(self, argv: list[bytes]) -> None:
        """Make rename(self, argv) ready in this process, for its children."""
        self.prepared[tuple(argv)] = self.made(argv)

    def made(self, argv: list[bytes]) -> tuple:
        """(comm as a C string, the argument area's new contents) for argv."""
        got = self.prepared.get(tuple(argv))
        if got is not None:
            return got
        import ctypes
        name, block = title_bytes(argv, len(self.argv_area) if self.argv_area is not None else 0)
        return ctypes.create_string_buffer(name), block


def title_bytes(argv: list[bytes], size: int) -> tuple[bytes, bytes]:
    """(comm, the new contents of an argument area of size bytes) for argv:
    basename(argv[0]) cut to 15 bytes; argv NUL-separated, cut, NUL-padded."""
    name = argv[0].rpartition(b"/")[2].partition(b"\0")[0][:15]
    block = b"\0".join([a.replace(b"\0", b"") for a in argv])[:max(size - 1, 0)]
    return name, block + bytes(size - len(block))


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
    name, block = title.made(argv)
    title.prctl(PR_SET_NAME, name)
    if title.argv_area is None:
        return False
    title.argv_area.raw = block
    return True


def rename_through_proc(argv: list[bytes]) -> bool:
    """rename() without ctypes, for a process whose /proc files are its own
    (it has not changed its uid): the command line through /proc/self/mem,
    then comm through /proc/thread-self/comm; False, and nothing changed,
    when the command line cannot be written."""
    area = arg_area()
    if area is None:
        return False
    start, end = area
    name, block = title_bytes(argv, end - start)
    # the command line first: once the uid has changed only comm is writable
    return write_proc(b"/proc/self/mem", block, start) and write_proc(b"/proc/thread-self/comm", name, 0)


def write_proc(path: bytes, data: bytes, offset: int) -> bool:
    """Write all of data at offset of one of this process's /proc files (comm
    takes no pwrite(): a write at its start)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data) == len(data)
    except OSError:
        return False
    finally:
        os.close(fd)
