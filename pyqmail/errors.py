"""qmail's failure discipline: temporary (111) and permanent (100) failures,
qmail's errno texts (error_str.c) and its temporary-errno list (error_temp.c)."""
import errno
import os

EXIT_TEMPORARY = 111
EXIT_PERMANENT = 100


class Failure(Exception):
    """A failure with qmail's text; `code` is the exit code it maps to."""

    code = EXIT_TEMPORARY

    def __init__(self, text: bytes, code: int | None = None):
        super().__init__(text)
        self.text = text
        if code is not None:
            self.code = code


class Temporary(Failure):
    """Try again later: exit 111, `Z`, 4xx."""

    code = EXIT_TEMPORARY


class Permanent(Failure):
    """Give up: exit 100, `D`, 5xx."""

    code = EXIT_PERMANENT


# error_str.c, for the errnos Linux has; anything else gets its number.
_TEXTS = {
    0: b"no error",
    errno.EINTR: b"interrupted system call",
    errno.ENOMEM: b"out of memory",
    errno.ENOENT: b"file does not exist",
    errno.ETXTBSY: b"text busy",
    errno.EIO: b"input/output error",
    errno.EEXIST: b"file already exists",
    errno.ETIMEDOUT: b"timed out",
    errno.EINPROGRESS: b"operation in progress",
    errno.EAGAIN: b"temporary failure",
    errno.EPIPE: b"broken pipe",
    errno.EPERM: b"permission denied",
    errno.EACCES: b"access denied",
    errno.ESRCH: b"no such process",
    errno.ENXIO: b"device not configured",
    errno.E2BIG: b"argument list too long",
    errno.ENOEXEC: b"exec format error",
    errno.EBADF: b"file descriptor not open",
    errno.ECHILD: b"no child processes",
    errno.EDEADLK: b"operation would cause deadlock",
    errno.EFAULT: b"bad address",
    errno.ENOTBLK: b"not a block device",
    errno.EBUSY: b"device busy",
    errno.EXDEV: b"cross-device link",
    errno.ENODEV: b"device does not support operation",
    errno.ENOTDIR: b"not a directory",
    errno.EISDIR: b"is a directory",
    errno.EINVAL: b"invalid argument",
    errno.ENFILE: b"system cannot open more files",
    errno.EMFILE: b"process cannot open more files",
    errno.ENOTTY: b"not a tty",
    errno.EFBIG: b"file too big",
    errno.ENOSPC: b"out of disk space",
    errno.ESPIPE: b"unseekable descriptor",
    errno.EROFS: b"read-only file system",
    errno.EMLINK: b"too many links",
    errno.EDOM: b"input out of range",
    errno.ERANGE: b"output out of range",
    errno.EALREADY: b"operation already in progress",
    errno.ENOTSOCK: b"not a socket",
    errno.EDESTADDRREQ: b"destination address required",
    errno.EMSGSIZE: b"message too long",
    errno.EPROTOTYPE: b"incorrect protocol type",
    errno.ENOPROTOOPT: b"protocol not available",
    errno.EPROTONOSUPPORT: b"protocol not supported",
    errno.ESOCKTNOSUPPORT: b"socket type not supported",
    errno.EOPNOTSUPP: b"operation not supported",
    errno.EPFNOSUPPORT: b"protocol family not supported",
    errno.EAFNOSUPPORT: b"address family not supported",
    errno.EADDRINUSE: b"address already used",
    errno.EADDRNOTAVAIL: b"address not available",
    errno.ENETDOWN: b"network down",
    errno.ENETUNREACH: b"network unreachable",
    errno.ENETRESET: b"network reset",
    errno.ECONNABORTED: b"connection aborted",
    errno.ECONNRESET: b"connection reset",
    errno.ENOBUFS: b"out of buffer space",
    errno.EISCONN: b"already connected",
    errno.ENOTCONN: b"not connected",
    errno.ESHUTDOWN: b"socket shut down",
    errno.ETOOMANYREFS: b"too many references",
    errno.ECONNREFUSED: b"connection refused",
    errno.ELOOP: b"symbolic link loop",
    errno.ENAMETOOLONG: b"file name too long",
    errno.EHOSTDOWN: b"host down",
    errno.EHOSTUNREACH: b"host unreachable",
    errno.ENOTEMPTY: b"directory not empty",
    errno.EUSERS: b"too many users",
    errno.EDQUOT: b"disk quota exceeded",
    errno.ESTALE: b"stale NFS file handle",
    errno.EREMOTE: b"too many levels of remote in path",
    errno.ENOLCK: b"no locks available",
    errno.ENOSYS: b"system call not available",
    errno.ENOSTR: b"not a stream device",
    errno.ETIME: b"timer expired",
    errno.ENOSR: b"out of stream resources",
    errno.ENOMSG: b"no message of desired type",
    errno.EBADMSG: b"bad message type",
    errno.EIDRM: b"identifier removed",
    errno.ENONET: b"machine not on network",
    errno.ENOLINK: b"link severed",
    errno.EADV: b"advertise error",
    errno.ESRMNT: b"srmount error",
    errno.ECOMM: b"communication error",
    errno.EPROTO: b"protocol error",
    errno.EMULTIHOP: b"multihop attempted",
    errno.EREMCHG: b"remote address changed",
}

# error_temp.c: the errnos after which trying again may help.
_TEMPORARY = frozenset((
    errno.EINTR, errno.ENOMEM, errno.ETXTBSY, errno.EIO, errno.ETIMEDOUT,
    errno.EWOULDBLOCK, errno.EAGAIN, errno.EDEADLK, errno.EBUSY, errno.ENFILE,
    errno.EMFILE, errno.EFBIG, errno.ENOSPC, errno.ENETDOWN, errno.ENETUNREACH,
    errno.ENETRESET, errno.ECONNABORTED, errno.ECONNRESET, errno.ENOBUFS,
    errno.ETOOMANYREFS, errno.ECONNREFUSED, errno.EHOSTDOWN, errno.EHOSTUNREACH,
    errno.EUSERS, errno.EDQUOT, errno.ESTALE, errno.ENOLCK,
))


def error_str(e: BaseException | int) -> bytes:
    """qmail's wording for an errno (or an OSError); `error N` when it has none."""
    number = e if isinstance(e, int) else getattr(e, "errno", None)
    if number is None:
        return str(e).encode("utf-8", "replace") or b"unknown error"
    return _TEXTS.get(number, b"error %d" % number)


def is_temporary(e: BaseException | int) -> bool:
    """qmail's error_temp(): true for errnos after which a retry may succeed."""
    number = e if isinstance(e, int) else getattr(e, "errno", None)
    return number in _TEMPORARY


def from_oserror(e: OSError, text: bytes) -> Failure:
    """`text: REASON`, temporary or permanent by qmail's error_temp() rule."""
    kind = Temporary if is_temporary(e) else Permanent
    return kind(b"%s: %s" % (text, error_str(e)))


def write_line(fd: int, text: bytes) -> None:
    """Write `text` and an LF to fd, ignoring failure (the exit code tells)."""
    data = text if text.endswith(b"\n") else text + b"\n"
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def report(fd: int, failure: Failure, code: int | None = None) -> int:
    """Write a failure's text on fd; return the exit code it maps to."""
    write_line(fd, failure.text)
    return failure.code if code is None else code


def die(program: bytes, failure: Failure) -> int:
    """`PROGRAM: fatal: TEXT` on fd 2 (qmail's strerr_die); return its exit code."""
    write_line(2, b"%s: fatal: %s" % (program, failure.text))
    return failure.code


BUG_TEXT = b"internal error in pyqmail, please report it (#4.3.0)"


def note_bug(fd: int) -> int:
    """An unexpected bug: one line of text, a temporary failure, never a traceback."""
    write_line(fd, BUG_TEXT)
    return EXIT_TEMPORARY
