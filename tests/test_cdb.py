"""cdb.py: DJB's constant database through cdblib, checked against the format."""
import os
import struct

import pytest

from pyqmail import cdb


def djb_hash(key: bytes) -> int:
    h = 5381
    for c in key:
        h = ((h << 5) + h) & 0xFFFFFFFF ^ c
    return h


def cdbmake_bytes(records) -> bytes:
    """The file cdbmake (cdb-0.75, qmail's cdbmake) writes, built from the format."""
    body = bytearray()
    pos = 2048
    slots = [[] for _ in range(256)]
    for key, data in records:
        h = djb_hash(key)
        slots[h & 255].append((h, pos))
        rec = struct.pack("<LL", len(key), len(data)) + key + data
        body += rec
        pos += len(rec)
    header = bytearray()
    tables = bytearray()
    for entries in slots:
        length = len(entries) * 2
        header += struct.pack("<LL", pos + len(tables), length)
        table = [(0, 0)] * length
        for h, p in entries:
            where = (h >> 8) % length
            while table[where] != (0, 0):
                where = (where + 1) % length
            table[where] = (h, p)
        for h, p in table:
            tables += struct.pack("<LL", h, p)
    return bytes(header + body + tables)


RECORDS = [(b"example.com", b""), (b".example.net", b""), (b"!joe-", b"joe\x001000\x00"),
           (b"dup", b"one"), (b"dup", b"two"), (b"", b"empty key"), (b"\xff\x00bin", b"\x00" * 300)]


def test_reads_a_file_made_by_the_format(tmp_path):
    path = tmp_path / "qmail.cdb"
    path.write_bytes(cdbmake_bytes(RECORDS))
    db = cdb.open_cdb(os.fsencode(path))
    assert db.get(b"example.com") == b""
    assert db.get(b"!joe-") == b"joe\x001000\x00"
    assert db.gets(b"dup") == [b"one", b"two"]
    assert db.get(b"") == b"empty key"
    assert db.get(b"\xff\x00bin") == b"\x00" * 300
    assert db.get(b"EXAMPLE.COM") is None
    assert db.get(b"absent") is None


def test_writes_the_same_bytes_as_cdbmake(tmp_path):
    path = os.fsencode(tmp_path / "x.cdb")
    cdb.make(path, path + b".tmp", RECORDS)
    with open(path, "rb") as f:
        assert f.read() == cdbmake_bytes(RECORDS)
    assert not os.path.exists(path + b".tmp")
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)


def test_round_trip_many(tmp_path):
    records = [(b"key%d" % i, b"value%d" % i) for i in range(5000)]
    path = os.fsencode(tmp_path / "big.cdb")
    cdb.make(path, path + b".tmp", records)
    db = cdb.open_cdb(path)
    assert all(db.get(k) == v for k, v in records)
    assert db.items() == records


def test_missing_file_is_none(tmp_path):
    assert cdb.open_cdb(os.fsencode(tmp_path / "none.cdb")) is None
    assert cdb.lookup(os.fsencode(tmp_path / "none.cdb"), b"k") is None


def test_truncated_file_is_an_error(tmp_path):
    path = tmp_path / "short.cdb"
    path.write_bytes(b"\0" * 100)
    with pytest.raises(cdb.CdbError) as e:
        cdb.open_cdb(os.fsencode(path))
    assert e.value.reason == b"truncated cdb file"


def test_failed_write_leaves_old_file(tmp_path):
    path = os.fsencode(tmp_path / "x.cdb")
    cdb.make(path, path + b".tmp", [(b"a", b"1")])

    def broken():
        yield (b"b", b"2")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        cdb.make(path, path + b".tmp", broken())
    assert cdb.lookup(path, b"a") == b"1"
    assert not os.path.exists(path + b".tmp")
