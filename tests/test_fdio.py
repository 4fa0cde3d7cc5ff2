"""fdio.py: whole writes, timed reads, bounded lines, close-on-exec."""
import os
import subprocess
import threading

import pytest

from pyqmail import fdio


def test_write_all_survives_short_writes():
    r, w = os.pipe()
    data = os.urandom(1 << 20)  # far more than a pipe holds: many short writes
    got = []
    reader = threading.Thread(target=lambda: got.append(fdio.read_all(r, 2 << 20)))
    reader.start()
    fdio.write_all(w, data)
    os.close(w)
    reader.join(10)
    os.close(r)
    assert got == [data]


def test_read_timeout_raises_and_reads():
    r, w = os.pipe()
    with pytest.raises(fdio.Timeout):
        fdio.read_timeout(r, 10, 0.05)
    os.write(w, b"abc")
    assert fdio.read_timeout(r, 10, 1) == b"abc"
    os.close(w)
    assert fdio.read_timeout(r, 10, 1) == b""
    os.close(r)


def test_write_all_timeout_on_full_pipe():
    r, w = os.pipe()
    os.set_blocking(w, False)
    with pytest.raises(fdio.Timeout):
        fdio.write_all_timeout(w, b"x" * (1 << 20), 0.05)
    os.close(r)
    os.close(w)


def test_read_all_is_bounded():
    r, w = os.pipe()
    os.write(w, b"x" * 5000)
    os.close(w)
    with pytest.raises(fdio.LineTooLong):
        fdio.read_all(r, 4096)
    os.close(r)


@pytest.mark.parametrize("step", [1, 3, 4096])
def test_line_buffer_splits_lines(step):
    data = b"HELO x\r\nMAIL FROM:<a@b>\nRCPT"
    buf = fdio.LineBuffer(100)
    lines = []
    for i in range(0, len(data), step):
        buf.feed(data[i:i + step])
        while (line := buf.line()) is not None:
            lines.append(line)
    assert lines == [b"HELO x\r\n", b"MAIL FROM:<a@b>\n"]
    assert buf.rest() == b"RCPT"


def test_line_buffer_bounds_a_line_without_end():
    buf = fdio.LineBuffer(64)
    buf.feed(b"x" * 64)
    assert buf.line() is None
    buf.feed(b"x")
    with pytest.raises(fdio.LineTooLong):
        buf.line()


def test_line_buffer_bounds_a_whole_long_line():
    buf = fdio.LineBuffer(64)
    buf.feed(b"y" * 70 + b"\n")
    with pytest.raises(fdio.LineTooLong):
        buf.line()


def test_line_buffer_memory_stays_bounded():
    buf = fdio.LineBuffer(1000)
    for _ in range(10000):
        buf.feed(b"NOOP\r\n")
        assert buf.line() == b"NOOP\r\n"
    assert buf.pending() == 0


def test_move_fd_and_cloexec():
    r, w = os.pipe()
    assert not os.get_inheritable(r)  # Python's default: close-on-exec
    fdio.move_fd(r, 200)
    assert os.get_inheritable(200)
    out = subprocess.run(["sh", "-c", "test -e /proc/self/fd/200 && echo open"],
                         close_fds=False, capture_output=True)
    assert out.stdout == b"open\n"
    fdio.set_cloexec(200)
    out = subprocess.run(["sh", "-c", "test -e /proc/self/fd/200 && echo open || echo closed"],
                         close_fds=False, capture_output=True)
    assert out.stdout == b"closed\n"
    os.close(200)
    os.close(w)


def test_fsync_dir(tmp_path):
    fdio.fsync_dir(os.fsencode(tmp_path))
    with pytest.raises(NotADirectoryError):
        f = tmp_path / "file"
        f.write_bytes(b"")
        fdio.fsync_dir(os.fsencode(f))
