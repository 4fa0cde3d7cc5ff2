"""Constant databases (users/cdb, morercpthosts.cdb, tcprules' cdb files).

The only module that imports `cdblib` (the pure-cdb distribution).  Files are
D. J. Bernstein's 32-bit cdb format, so qmail's and ucspi-tcp's tools read what
this writes and the other way round.
"""
import errno
import os

import cdblib

from pyqmail import errors, fdio


class CdbError(Exception):
    """A cdb file exists but cannot be read or is not a cdb."""

    def __init__(self, path: bytes, reason: bytes):
        super().__init__(b"%s: %s" % (path, reason))
        self.path = path
        self.reason = reason


class Cdb:
    """An open cdb file; `get(key)` is the first value, `gets(key)` all of them."""

    def __init__(self, data: bytes, path: bytes = b""):
        if len(data) < 2048:
            raise CdbError(path, b"truncated cdb file")
        self.path = path
        self._reader = cdblib.Reader(data)

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._reader.get(key)
        except (IndexError, ValueError, KeyError):
            raise CdbError(self.path, b"corrupt cdb file") from None

    def gets(self, key: bytes) -> list[bytes]:
        try:
            return list(self._reader.gets(key))
        except (IndexError, ValueError):
            raise CdbError(self.path, b"corrupt cdb file") from None

    def items(self) -> list[tuple[bytes, bytes]]:
        return list(self._reader.iteritems())


def open_cdb(path: bytes) -> Cdb | None:
    """The cdb at path, or None when it does not exist; CdbError when unusable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise CdbError(path, errors.error_str(e)) from None
    return Cdb(data, path)


def lookup(path: bytes, key: bytes) -> bytes | None:
    """One value for key in the cdb at path; None when the file or key is absent."""
    db = open_cdb(path)
    return None if db is None else db.get(key)


def write(tmp: bytes, records, mode: int = 0o644) -> None:
    """Write records (key, value) into a new cdb at tmp and fsync it; on any
    OSError tmp is removed and the error propagates."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb", closefd=False) as f:
            with cdblib.Writer(f) as writer:
                for key, value in records:
                    writer.put(key, value)
            f.flush()
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)


def make(path: bytes, tmp: bytes, records, mode: int = 0o644) -> None:
    """cdbmake's discipline: write tmp, fsync, rename over path; readers see the
    old file or the new one, never half of one."""
    write(tmp, records, mode)
    os.rename(tmp, path)
    # Linux makes a rename durable only once its directory is fsynced.
    fdio.fsync_dir(os.path.dirname(path) or b".")


def cdb_hash(key: bytes) -> int:
    """cdb's hash: h = ((h << 5) + h) ^ c from 5381, in 32 bits."""
    h = 5381
    for c in key:
        h = (((h << 5) + h) & 0xFFFFFFFF) ^ c
    return h


def _pread(fd: int, size: int, offset: int, path: bytes) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise CdbError(path, b"truncated cdb file")
    return data


def _pair(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[:4], "little"), int.from_bytes(data[4:8], "little")


def find(fd: int, key: bytes, path: bytes = b"") -> bytes | None:
    """qmail's cdb_seek() on an open cdb: the first value for key, None when the
    key is absent, reading only the slots it needs (the file may be large).
    OSError on a read error, CdbError on a file that is not a cdb."""
    h = cdb_hash(key)
    table, slots = _pair(_pread(fd, 8, (h & 255) * 8, path))
    if not slots:
        return None
    start = (h >> 8) % slots
    for i in range(slots):
        slot_hash, record = _pair(_pread(fd, 8, table + ((start + i) % slots) * 8, path))
        if not record:
            return None
        if slot_hash == h:
            klen, dlen = _pair(_pread(fd, 8, record, path))
            if klen == len(key) and _pread(fd, klen, record + 8, path) == key:
                return _pread(fd, dlen, record + 8 + klen, path)
    return None
