"""checkpassword: check a login against the system's password database and run
a program as that user (the checkpassword interface, spec/pop3.md §3).

    checkpassword prog [args ...]

Debian has no package of djb's checkpassword 0.90, so pyqmail ships this one,
which behaves as it does: fd 3 carries `login\\0password\\0timestamp\\0` (at
most 512 bytes); the password is checked with crypt(3) against the shadow
entry (the passwd field when there is none); exit 1 for a bad login or
password, 2 for misuse, 111 for a temporary failure; on success: groups and
gid, then uid, chdir to the home, USER, HOME and SHELL set, and prog exec'd
(so its exit status is ours).  The timestamp is ignored, so APOP fails, as
with the stock tool.

Run by qmail-popup as root; installed as root's alone (mode 0700).  crypt(3)
and getspnam(3) are called through ctypes: Python's crypt and spwd modules are
deprecated and gone in Python 3.13.
"""
import ctypes
import os
import pwd
import sys

from pyqmail import environ, errors, prot

UP_MAX = 512    # djb's up[513]: reading 513 bytes means too much


class Spwd(ctypes.Structure):
    """The start of struct spwd: only the name and the hash are used."""
    _fields_ = [("sp_namp", ctypes.c_char_p), ("sp_pwdp", ctypes.c_char_p)]


class Failure(Exception):
    """Exit with `code` (1 bad login, 2 misuse, 111 temporary)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def read_login(fd: int) -> bytearray:
    """Everything on fd up to EOF, then close it; 1 past UP_MAX bytes."""
    up = bytearray()
    while True:
        try:
            chunk = os.read(fd, UP_MAX + 1 - len(up))
        except OSError:
            raise Failure(111) from None
        if not chunk:
            break
        up += chunk
        if len(up) > UP_MAX:
            raise Failure(1)
    os.close(fd)
    return up


def split_login(up: bytearray) -> tuple[bytes, bytes]:
    """login and password, each NUL-terminated; 2 when malformed."""
    fields = bytes(up).split(b"\0", 2)
    if len(fields) < 3:
        raise Failure(2)
    return fields[0], fields[1]


def stored_hash(login: bytes) -> bytes | None:
    """The shadow entry's hash; None when login has none, 111 when the
    database is temporarily unavailable."""
    libc = ctypes.CDLL(None, use_errno=True)
    getspnam = libc.getspnam
    getspnam.restype = ctypes.POINTER(Spwd)
    getspnam.argtypes = [ctypes.c_char_p]
    ctypes.set_errno(0)
    entry = getspnam(login)
    if not entry:
        if errors.is_temporary(ctypes.get_errno()):
            raise Failure(111)
        return None
    return entry.contents.sp_pwdp or b""


def crypt(password: bytes, salt: bytes) -> bytes | None:
    """crypt(3) from libcrypt; None when it fails."""
    try:
        lib = ctypes.CDLL("libcrypt.so.1")
    except OSError:
        raise Failure(111) from None
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lib.crypt(password, salt)


def check(login: bytes, password: bytes) -> pwd.struct_passwd:
    """The passwd entry when password is login's; Failure(1) otherwise."""
    if not login or b"\0" in login:
        raise Failure(1)
    try:
        pw = pwd.getpwnam(os.fsdecode(login))
    except KeyError:
        raise Failure(1) from None
    stored = stored_hash(login)
    if stored is None:
        # checkpassword 0.90: no shadow entry, so the passwd field is the hash
        stored = os.fsencode(pw.pw_passwd)
    encrypted = crypt(password, stored)
    if not stored or encrypted is None or encrypted != stored:
        raise Failure(1)
    return pw


def become(pw: pwd.struct_passwd, env: dict[bytes, bytes]) -> None:
    """gid (groups = just it), uid, chdir home, USER HOME SHELL."""
    try:
        prot.drop(pw.pw_uid, pw.pw_gid)
    except OSError:
        raise Failure(1) from None
    home = os.fsencode(pw.pw_dir)
    try:
        os.chdir(home)
    except OSError:
        raise Failure(111) from None
    env[b"USER"] = os.fsencode(pw.pw_name)
    env[b"HOME"] = home
    env[b"SHELL"] = os.fsencode(pw.pw_shell)


def run(argv: list[bytes], env: dict[bytes, bytes], login_fd: int = 3) -> int:
    """checkpassword's job; returns only on failure (the exit code)."""
    if len(argv) < 2:
        return 2
    try:
        up = read_login(login_fd)
        try:
            login, password = split_login(up)
            pw = check(login, password)
        finally:
            up[:] = bytes(len(up))
        become(pw, env)
    except Failure as e:
        return e.code
    try:
        os.execvpe(argv[1], argv[1:], env)
    except OSError:
        return 111
    return 111


def main() -> None:
    try:
        code = run([os.fsencode(a) for a in sys.argv], environ.original())
    except Exception:
        code = errors.note_bug(2)
    sys.exit(code)
