"""File-descriptor helpers: whole writes, bounded and timed reads, close-on-exec,
directory fsync, and a bounded line buffer for network input.

Python retries EINTR itself (PEP 475); these helpers add what it does not:
short writes, deadlines, and limits on what a peer can make us buffer.
"""
import os
import select


class Timeout(Exception):
    """A read or write did not complete within its deadline."""


class LineTooLong(Exception):
    """A peer sent more than the bound without ending its line."""


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of data to fd (handles short writes)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


POLL_MAX_MS = 2 ** 31 - 1   # poll() takes an int of milliseconds


def poll_for(poller, timeout: float | None) -> bool:
    """poller.poll() for timeout seconds (None = forever), however long: qmail's
    select() takes any int of seconds, poll() only 24.8 days at a time."""
    if timeout is None:
        return bool(poller.poll(None))
    ms = max(0, int(timeout * 1000))
    while ms > POLL_MAX_MS:
        if poller.poll(POLL_MAX_MS):
            return True
        ms -= POLL_MAX_MS
    return bool(poller.poll(ms))


def write_all_timeout(fd: int, data: bytes, timeout: float) -> None:
    """write_all with a deadline for each write (qmail's timeoutwrite)."""
    view = memoryview(data)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while view:
        if not poll_for(poller, timeout):
            raise Timeout()
        view = view[os.write(fd, view):]


def wait_readable(fd: int, timeout: float | None) -> bool:
    """True when fd is readable (or at EOF/error) within timeout seconds."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return poll_for(poller, timeout)


def read_timeout(fd: int, size: int, timeout: float) -> bytes:
    """One read of at most size bytes, within timeout seconds (qmail's timeoutread);
    b"" is EOF; raises Timeout."""
    if not wait_readable(fd, timeout):
        raise Timeout()
    return os.read(fd, size)


def read_exact(fd: int, size: int) -> bytes:
    """Exactly size bytes, or fewer only at EOF."""
    chunks = []
    while size > 0:
        chunk = os.read(fd, size)
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_all(fd: int, limit: int | None = None) -> bytes:
    """Everything until EOF; raises LineTooLong past limit bytes (if any)."""
    chunks = []
    total = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if limit is not None and total > limit:
            raise LineTooLong()
        chunks.append(chunk)


def set_cloexec(fd: int, on: bool = True) -> None:
    """Mark fd close-on-exec (on) or inheritable across exec (off)."""
    os.set_inheritable(fd, not on)


def move_fd(src: int, dst: int) -> None:
    """Put src at dst (inheritable, as qmail's fd_move), closing src."""
    if src != dst:
        os.dup2(src, dst, inheritable=True)
        os.close(src)
    else:
        os.set_inheritable(dst, True)


def fsync_dir(path: bytes) -> None:
    """fsync a directory: on Linux a link, unlink or rename survives a crash only
    once its directory is synced (qmail relied on BSD's synchronous metadata)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LineBuffer:
    """Bytes in, whole lines out, never holding more than `limit` bytes.

    `feed(data)` adds bytes; `line()` returns the next line including its LF, or
    None when no whole line is buffered; LineTooLong once the buffered part of a
    line passes the limit.  `rest()` hands back whatever is buffered.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self._buf = bytearray()
        self._start = 0

    def feed(self, data: bytes) -> None:
        if self._start:
            del self._buf[:self._start]
            self._start = 0
        self._buf += data

    def line(self) -> bytes | None:
        end = self._buf.find(b"\n", self._start)
        if end < 0:
            if len(self._buf) - self._start > self.limit:
                raise LineTooLong()
            return None
        if end + 1 - self._start > self.limit:
            raise LineTooLong()
        out = bytes(self._buf[self._start:end + 1])
        self._start = end + 1
        return out

    def pending(self) -> int:
        """How many bytes are buffered."""
        return len(self._buf) - self._start

    def rest(self) -> bytes:
        out = bytes(self._buf[self._start:])
        self._buf.clear()
        self._start = 0
        return out
