"""Control files, read by qmail's rules (control.c; spec/control.md §1).

Three kinds: `line` (first line, trailing SP/TAB/LF dropped, CR kept), `int`
(leading decimal digits of that line; none means absent) and `list` (every line,
trailing SP/TAB dropped, empty and `#` lines skipped).  A missing file gives the
default; a file that exists but cannot be read is an error, never the default.
"""
import errno
import os

from pyqmail import errors, fdio

MAX_SIZE = 16 * 1024 * 1024  # bound on what one control file may hold


class ControlError(Exception):
    """A control file exists but cannot be used; `path` and `reason` say why."""

    def __init__(self, path: bytes, reason: bytes):
        super().__init__(b"unable to read %s: %s" % (path, reason))
        self.path = path
        self.reason = reason
        self.text = b"unable to read %s: %s" % (path, reason)


def read_bytes(path: bytes) -> bytes | None:
    """The file's bytes, or None when it does not exist; ControlError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENOENT:
            return None
        raise ControlError(path, errors.error_str(e)) from None
    try:
        data = fdio.read_all(fd, MAX_SIZE)
    except fdio.LineTooLong:
        raise ControlError(path, b"file too big") from None
    except OSError as e:
        raise ControlError(path, errors.error_str(e)) from None
    finally:
        os.close(fd)
    if b"\0" in data:
        # qmail would silently cut the value at the NUL; refuse it instead,
        # as for an unreadable file, so the admin sees what is wrong.
        raise ControlError(path, b"file contains a NUL byte")
    return data


def strip_line(line: bytes) -> bytes:
    """control.c striptrailingwhitespace(): drop trailing LF, SP and TAB."""
    return line.rstrip(b"\n \t")


def parse_line(data: bytes) -> bytes:
    """The value of a `line` file's bytes."""
    return strip_line(data.split(b"\n", 1)[0])


def scan_ulong(value: bytes) -> int | None:
    """qmail's scan_ulong(): the leading decimal digits, or None if there are none."""
    end = 0
    while end < len(value) and 48 <= value[end] <= 57:
        end += 1
    return int(value[:end]) if end else None


def c_int(value: int) -> int:
    """control_readint()'s `*i = u`: an unsigned long kept in a 32-bit C int."""
    return ((value % (1 << 32)) ^ (1 << 31)) - (1 << 31)


def parse_list(data: bytes) -> list[bytes]:
    """The entries of a `list` file's bytes."""
    if data.endswith(b"\n"):
        data = data[:-1]
    out = []
    if not data:
        return out
    for line in data.split(b"\n"):
        line = line.rstrip(b" \t")
        if line and not line.startswith(b"#"):
            out.append(line)
    return out


class Control:
    """The control directory of one installation, with `me` read once."""

    def __init__(self, qmail_home: bytes, subdir: bytes = b"control"):
        self.dir = os.path.join(qmail_home, subdir)
        self.prefix = self.dir.rstrip(b"/") + b"/"
        self._me: bytes | None = None
        self._me_read = False

    def path(self, name: bytes) -> bytes:
        """dir/name (name is never absolute here: no os.path.join, whose Python
        code a forked qmail-smtpd would run cold for each file)."""
        return self.prefix + name

    @property
    def me(self) -> bytes | None:
        """control/me (control_init); None when missing, ControlError if unreadable."""
        if not self._me_read:
            data = read_bytes(self.path(b"me"))
            self._me = None if data is None else parse_line(data)
            self._me_read = True
        return self._me

    def line(self, name: bytes, default: bytes | None = None,
             use_me: bool = False) -> bytes | None:
        """control_rldef(): the file's first line; else `me` if use_me; else default."""
        data = read_bytes(self.path(name))
        if data is not None:
            return parse_line(data)
        if use_me and self.me is not None:
            return self.me
        return default

    def int(self, name: bytes, default: int) -> int:
        """control_readint(): leading digits of the first line, else the default."""
        data = read_bytes(self.path(name))
        if data is None:
            return default
        value = scan_ulong(parse_line(data))
        return default if value is None else value

    def list(self, name: bytes, use_me: bool = False) -> list[bytes] | None:
        """control_readfile(): the entries; None when missing (or [me] if use_me)."""
        data = read_bytes(self.path(name))
        if data is None:
            if use_me and self.me is not None:
                return [self.me]
            return None
        return parse_list(data)
