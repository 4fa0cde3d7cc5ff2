"""Renaming a forked child to the program it becomes (INTERFACE.md §3: a child
forked without exec to run another program's code shows that program's name in
/proc as its comm and argv[0]).

comm is set with prctl(PR_SET_NAME); the command line is overwritten in place,
in the memory the kernel reports as the argument area (/proc/self/stat fields
48-49), as setproctitle(3) does: no privilege needed, but the new command line
is cut to the length of the old one and padded with NULs.
"""
import ctypes
import os

PR_SET_NAME = 15


_area: tuple[int, int] | None = None


def libc() -> ctypes.CDLL:
    """Load libc once in a long-running parent, before the first fork; the
    argument area, the same in every child it forks, is read here once too."""
    global _area
    _area = arg_area()
    return ctypes.CDLL(None, use_errno=True)


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


def rename(lib: ctypes.CDLL, argv: list[bytes]) -> bool:
    """Set comm to basename(argv[0]) and the command line to argv (as much as
    fits); False if the command line could not be changed."""
    name = os.path.basename(argv[0])[:15]
    lib.prctl(PR_SET_NAME, ctypes.c_char_p(name), ctypes.c_ulong(0), ctypes.c_ulong(0),
              ctypes.c_ulong(0))
    area = _area or arg_area()
    if area is None:
        return False
    start, end = area
    size = end - start
    block = b"\0".join(a.replace(b"\0", b"") for a in argv)[:size - 1]
    block += b"\0" * (size - len(block))
    ctypes.memmove(start, block, size)
    return True
