"""qmail-tcpto: print the timeout table (spec/admin-tools.md §4).

One line per record with recent timeouts, queue/lock/tcpto first, then
pyqmail's queue/lock/tcpto6 (IPv6 partners) when it exists:
`IP timed out SECONDS seconds ago; # recent timeouts: COUNT`.
"""
import errno
import fcntl
import os
import socket
import sys

from pyqmail import auto, errors, tcpto


class Fatal(Exception):
    """`fatal: TEXT: ERR` on fd 1, exit 111."""


def read_table(name: bytes, what: bytes, missing_ok: bool) -> bytes | None:
    """The table's bytes, read under the lock taken through a write fd."""
    try:
        fdlock = os.open(name, os.O_WRONLY)
        fd = os.open(name, os.O_RDONLY)
    except OSError as e:
        if missing_ok and e.errno == errno.ENOENT:
            return None
        raise Fatal(b"fatal: unable to open %s: %s" % (what, errors.error_str(e))) from None
    try:
        try:
            fcntl.flock(fdlock, fcntl.LOCK_EX)
        except OSError as e:
            raise Fatal(b"fatal: unable to lock %s: %s" % (what, errors.error_str(e))) from None
        try:
            return os.read(fd, tcpto.SIZE)
        except OSError as e:
            raise Fatal(b"fatal: unable to read %s: %s" % (what, errors.error_str(e))) from None
    finally:
        os.close(fd)
        os.close(fdlock)


def lines(buf: bytes, lay: tcpto.Layout, family: int, start: int) -> list[bytes]:
    out = []
    for address, count, when in tcpto.records(buf, lay):
        seconds = (start - when) % (1 << 64)   # unsigned, as qmail prints it
        out.append(b"%s timed out %d seconds ago; # recent timeouts: %d\n"
                   % (socket.inet_ntop(family, address).encode(), seconds, count))
    return out


def run(argv: list[bytes], out_fd: int) -> int:
    """qmail-tcpto's main(); the exit code."""
    output = []
    try:
        try:
            os.chdir(auto.QMAIL_HOME)
            os.chdir(b"queue/lock")
        except OSError as e:
            raise Fatal(b"fatal: unable to chdir: %s" % errors.error_str(e)) from None
        buf4 = read_table(b"tcpto", b"tcpto", False)
        buf6 = read_table(b"tcpto6", b"tcpto6", True)
        start = tcpto.now()
        output += lines(buf4, tcpto.TCPTO, socket.AF_INET, start)
        if buf6 is not None:
            output += lines(buf6, tcpto.TCPTO6, socket.AF_INET6, start)
        code = 0
    except Fatal as e:
        output.append(e.args[0] + b"\n")
        code = 111
    try:
        data = b"".join(output)
        while data:
            data = data[os.write(out_fd, data):]
    except OSError:
        pass   # die(): substdio_flush() fails unnoticed; the exit code stands
    return code


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], 1))
