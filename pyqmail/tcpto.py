"""The timeout table (qmail's tcpto.c, tcpto_clean.c; spec/remote.md §9).

`queue/lock/tcpto` keeps qmail's exact IPv4 format: 1024 bytes, 16-byte
records: address (4 bytes, network order), byte 4 = recent timeouts (0-10),
bytes 8-11 = time of the last one, little-endian.  IPv6 partners go to
`queue/lock/tcpto6`, same size and rules with 32-byte records: address
(16 bytes), byte 16 = count, bytes 24-27 = time, so the IPv4 file stays
byte-compatible with qmail's tools.  A missing or unlockable file switches
the mechanism off, as in qmail.
"""
import fcntl
import os
import socket
import time

SIZE = 1024
ULONG = 1 << 64    # qmail's datetime_sec, an unsigned long


class Layout:
    """Where a table keeps address, count and time in its records."""

    def __init__(self, path: bytes, record: int, address: int, count: int, when: int):
        self.path = path
        self.record = record
        self.address = address
        self.count = count
        self.when = when


TCPTO = Layout(b"queue/lock/tcpto", 16, 4, 4, 8)
TCPTO6 = Layout(b"queue/lock/tcpto6", 32, 16, 16, 24)


def layout(family: int) -> Layout:
    return TCPTO6 if family == socket.AF_INET6 else TCPTO


def signed(byte: int) -> int:
    """The count byte as C's (signed) char."""
    return byte - 256 if byte >= 128 else byte


def get_when(buf: bytearray, off: int) -> int:
    return int.from_bytes(buf[off:off + 4], "little")


def put_when(buf: bytearray, off: int, when: int) -> None:
    buf[off:off + 4] = (when & 0xFFFFFFFF).to_bytes(4, "little")


def now() -> int:
    return int(time.time())


class Table:
    """One qmail-remote run's view of a table (tcpto.c's flagwasthere)."""

    def __init__(self, lay: Layout, base: bytes = b""):
        self.lay = lay
        self.path = os.path.join(base, lay.path) if base else lay.path
        self.was_there = False
        self.lock_fd = -1

    def _getbuf(self) -> tuple[bytearray, int]:
        """getbuf(): the records, with the lock held on self.lock_fd if n > 0."""
        try:
            self.lock_fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            return bytearray(), 0
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            self._unlock()
            return bytearray(), 0
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
            buf = bytearray(os.read(fd, SIZE))
        except OSError:
            self._unlock()
            return bytearray(), 0
        finally:
            os.close(fd)
        n = len(buf) // self.lay.record
        if not n:
            self._unlock()
        return buf, n

    def _unlock(self) -> None:
        if self.lock_fd != -1:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def _write(self, buf: bytearray, i: int) -> None:
        size = self.lay.record
        try:
            os.lseek(self.lock_fd, i * size, os.SEEK_SET)
            os.write(self.lock_fd, bytes(buf[i * size:(i + 1) * size]))
        except OSError:
            pass   # qmail: /*XXX*/

    def _find(self, buf: bytearray, n: int, ip: bytes) -> int:
        size, alen = self.lay.record, self.lay.address
        for i in range(n):
            if buf[i * size:i * size + alen] == ip:
                return i
        return -1

    def down(self, ip: bytes, pid: int | None = None) -> bool:
        """tcpto(): true if ip is to be skipped (two or more recent timeouts)."""
        self.was_there = False
        buf, n = self._getbuf()
        if not n:
            return False
        self._unlock()
        i = self._find(buf, n, ip)
        if i < 0:
            return False
        self.was_there = True
        off = i * self.lay.record
        if signed(buf[off + self.lay.count]) >= 2:
            when = get_when(buf, off + self.lay.when)
            pid = os.getpid() if pid is None else pid
            # datetime_sec is unsigned: a time ahead of the clock never skips
            if (now() - when) % ULONG < (60 + (pid & 31)) << 6:
                return True
        return False

    def err(self, ip: bytes, flagerr: bool) -> None:
        """tcpto_err(): record a connect result; flagerr = it timed out."""
        if not flagerr and not self.was_there:
            return
        buf, n = self._getbuf()
        if not n:
            return
        try:
            self._update(buf, n, ip, flagerr)
        finally:
            self._unlock()

    def _update(self, buf: bytearray, n: int, ip: bytes, flagerr: bool) -> None:
        size, count, whenoff = self.lay.record, self.lay.count, self.lay.when
        i = self._find(buf, n, ip)
        if i >= 0:
            off = i * size
            if not flagerr:
                buf[off + count] = 0
            else:
                lastwhen = get_when(buf, off + whenoff)
                when = now()
                if buf[off + count] and when < 120 + lastwhen:
                    return   # parallel timeouts count once
                c = signed(buf[off + count]) + 1
                if c > 127:
                    c = -128
                if c > 10:
                    c = 10
                buf[off + count] = c & 0xFF
                put_when(buf, off + whenoff, when)
            self._write(buf, i)
            return
        if not flagerr:
            return
        i = next((k for k in range(n) if not buf[k * size + count]), -1)
        if i < 0:
            firstwhen = 0
            for k in range(n):
                off = k * size
                when = (get_when(buf, off + whenoff) + (signed(buf[off + count]) << 10)) % ULONG
                if i < 0 or when < firstwhen:
                    i, firstwhen = k, when
        off = i * size
        buf[off:off + self.lay.address] = ip
        put_when(buf, off + whenoff, now())
        buf[off + count] = 1
        self._write(buf, i)


def clean(path: bytes) -> None:
    """tcpto_clean(): 1024 NUL bytes at offset 0; no create, errors ignored."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return
    try:
        os.write(fd, b"\0" * SIZE)
    except OSError:
        pass
    finally:
        os.close(fd)


def records(buf: bytes, lay: Layout) -> list[tuple[bytes, int, int]]:
    """(address, count byte, time) of every whole record whose count is >= 1."""
    out = []
    for off in range(0, len(buf) - lay.record + 1, lay.record):
        if signed(buf[off + lay.count]) >= 1:
            out.append((bytes(buf[off:off + lay.address]), buf[off + lay.count],
                        get_when(buf, off + lay.when)))
    return out
