"""The timeout table (spec/remote.md §9) and qmail-tcpto / qmail-tcpok
(spec/admin-tools.md §4)."""
import os
import shutil
import socket
import struct
import subprocess
import time

import pytest

from conftest import install, need_root, public_tmpdir, uid
from pyqmail import tcpto

IP = b"\xc0\x00\x02\x19"   # 192.0.2.25


@pytest.fixture
def table_dir():
    base = public_tmpdir("pyqmail-tcpto-")
    os.makedirs(os.path.join(base, "queue/lock"))
    for name in ("tcpto", "tcpto6"):
        with open(os.path.join(base, "queue/lock", name), "wb") as f:
            f.write(b"\0" * 1024)
    yield base
    shutil.rmtree(base)


def table(base, name="tcpto"):
    with open(os.path.join(base, "queue/lock", name), "rb") as f:
        return bytearray(f.read())


def put(base, data, name="tcpto"):
    with open(os.path.join(base, "queue/lock", name), "r+b") as f:
        f.write(data)


def record(ip, count, when):
    return ip + bytes((count, 0, 0, 0)) + struct.pack("<I", when) + b"\0" * 4


def test_ok_without_record_writes_nothing(table_dir):
    t = tcpto.Table(tcpto.TCPTO, os.fsencode(table_dir))
    assert not t.down(IP)
    t.err(IP, False)
    assert table(table_dir) == b"\0" * 1024


def test_timeouts_count_and_skip(table_dir):
    t = tcpto.Table(tcpto.TCPTO, os.fsencode(table_dir))
    assert not t.down(IP)
    t.err(IP, True)
    buf = table(table_dir)
    assert buf[:5] == IP + b"\1" and abs(struct.unpack("<I", buf[8:12])[0] - time.time()) < 5
    # a parallel timeout (within 120 s) counts once
    t.err(IP, True)
    assert table(table_dir) == buf
    put(table_dir, record(IP, 1, int(time.time()) - 121))
    t.err(IP, True)
    assert table(table_dir)[4] == 2
    # two recent timeouts: skipped for (60 + pid % 32) * 64 seconds
    assert t.down(IP, pid=0)
    put(table_dir, record(IP, 2, int(time.time()) - 60 * 64))
    assert not t.down(IP, pid=0) and t.down(IP, pid=31)
    # a connection that does not time out clears the count, keeps the address
    t.err(IP, False)
    assert table(table_dir)[:5] == IP + b"\0"
    # the count stops at 10
    put(table_dir, record(IP, 10, 0))
    t.err(IP, True)
    assert table(table_dir)[4] == 10


def test_new_record_takes_a_free_slot_then_the_oldest(table_dir):
    now = int(time.time())
    full = b"".join(record(bytes((10, 0, 0, i)), 1, now - 10000 + i) for i in range(64))
    put(table_dir, full[:16 * 5] + record(b"\1\1\1\1", 0, now) + full[16 * 6:])
    t = tcpto.Table(tcpto.TCPTO, os.fsencode(table_dir))
    t.down(IP)
    t.err(IP, True)
    assert table(table_dir)[16 * 5:16 * 5 + 5] == IP + b"\1"
    # full: the least time + 1024 * count goes (record 0, oldest)
    put(table_dir, full)
    t.err(b"\2\2\2\2", True)
    assert table(table_dir)[:5] == b"\2\2\2\2\1"
    assert table(table_dir)[16:] == full[16:]


def test_times_are_unsigned(table_dir):
    # datetime_sec is unsigned: a last timeout ahead of the clock is not recent
    t = tcpto.Table(tcpto.TCPTO, os.fsencode(table_dir))
    put(table_dir, record(IP, 2, int(time.time()) + 1000))
    assert not t.down(IP, pid=0)
    # time + 1024 * count wraps for a (corrupt) negative count: never the least
    now = int(time.time())
    full = [record(bytes((10, 0, 0, i)), 1, now - 10000 + i) for i in range(64)]
    full[3] = record(b"\3\3\3\3", 0xFF, 0)
    put(table_dir, b"".join(full))
    t.err(b"\2\2\2\2", True)
    buf = table(table_dir)
    assert buf[:5] == b"\2\2\2\2\1" and buf[48:64] == full[3]


def test_ipv6_table_layout(table_dir):
    ip6 = socket.inet_pton(socket.AF_INET6, "2001:db8::25")
    t = tcpto.Table(tcpto.TCPTO6, os.fsencode(table_dir))
    t.down(ip6)
    t.err(ip6, True)
    buf = table(table_dir, "tcpto6")
    assert buf[:17] == ip6 + b"\1" and buf[17:24] == b"\0" * 7
    assert abs(struct.unpack("<I", buf[24:28])[0] - time.time()) < 5
    assert table(table_dir) == b"\0" * 1024   # the IPv4 file is untouched


def test_missing_table_is_off(table_dir):
    os.unlink(os.path.join(table_dir, "queue/lock/tcpto"))
    t = tcpto.Table(tcpto.TCPTO, os.fsencode(table_dir))
    assert not t.down(IP)
    t.err(IP, True)
    assert not os.path.exists(os.path.join(table_dir, "queue/lock/tcpto"))


@pytest.fixture(scope="module")
def home():
    need_root()
    base = public_tmpdir("pyqmail-tcpto-home-")
    path = os.path.join(base, "qmail")
    done = install(path)
    assert done.returncode == 0, done.stderr.decode()
    yield path
    shutil.rmtree(base, ignore_errors=True)


def run(home, name, user="qmailr", group="qmail"):
    return subprocess.run([os.path.join(home, "bin", name)], capture_output=True,
                          user=uid(user), group=group, extra_groups=[])


def test_qmail_tcpto_prints_and_qmail_tcpok_clears(home):
    now = int(time.time())
    ip6 = socket.inet_pton(socket.AF_INET6, "2001:db8::25")
    put(home, record(IP, 3, now - 100) + record(b"\1\2\3\4", 0, now) + record(b"\4\3\2\1", 1, now))
    put(home, ip6 + b"\2" + b"\0" * 7 + struct.pack("<I", now - 50) + b"\0" * 4, "tcpto6")
    done = run(home, "qmail-tcpto")
    assert done.returncode == 0 and done.stderr == b""
    lines = done.stdout.split(b"\n")
    assert lines[0].startswith(b"192.0.2.25 timed out ") and \
        lines[0].endswith(b" seconds ago; # recent timeouts: 3")
    assert 99 <= int(lines[0].split()[3]) <= 105
    assert lines[1].startswith(b"4.3.2.1 timed out ") and lines[1].endswith(b"timeouts: 1")
    assert lines[2].startswith(b"2001:db8::25 timed out ") and lines[2].endswith(b"timeouts: 2")
    assert lines[3:] == [b""]
    # a failed write of the report goes unnoticed, as qmail's die(0)
    with open("/dev/full", "wb") as full:
        done = subprocess.run([os.path.join(home, "bin", "qmail-tcpto")], stdout=full,
                              user=uid("qmailr"), group="qmail", extra_groups=[])
    assert done.returncode == 0
    done = run(home, "qmail-tcpok")
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
    assert table(home) == b"\0" * 1024 and table(home, "tcpto6") == b"\0" * 1024
    assert run(home, "qmail-tcpto").stdout == b""


def test_tcpto_tools_errors(home):
    path = os.path.join(home, "queue/lock/tcpto")
    os.chmod(path, 0o600)
    os.chown(path, 0, -1)
    try:
        done = run(home, "qmail-tcpto")
        assert (done.returncode, done.stdout) == (111, b"fatal: unable to open tcpto: access denied\n")
        done = run(home, "qmail-tcpok")
        assert done.returncode == 111
        assert done.stderr == b"qmail-tcpok: fatal: unable to write %s/queue/lock/tcpto: access denied\n" \
            % home.encode()
    finally:
        os.chown(path, uid("qmailr"), -1)
        os.chmod(path, 0o644)
    # queue/ and queue/lock/ are 0751 (INSTALL: the queue service's socket), so
    # qmaild reaches the table, but it may not lock it: only root and qmailr can
    done = run(home, "qmail-tcpto", user="qmaild", group="nofiles")
    assert (done.returncode, done.stdout) == (111, b"fatal: unable to open tcpto: access denied\n")
