"""qmail-getpw: find the user (and extension) an address belongs to, from the
passwd database (spec/local.md §3.2).  Runs as qmailp; prints
`user\\0uid\\0gid\\0home\\0dash\\0ext\\0` on fd 1."""
import os
import pwd
import sys

from pyqmail import auto, errors, fdio

# qlx.h
QLX_NFS = 115
QLX_NOALIAS = 116
QLX_SYS = 118

USERLEN = 32  # GETPW_USERLEN: names of 32 bytes or more are never users


def getpwnam(name: bytes) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(os.fsdecode(name))
    except (KeyError, ValueError):
        return None


def userext(local: bytes) -> tuple[pwd.struct_passwd, bytes, bytes] | None:
    """The longest BREAK-split prefix naming a non-root account that owns its
    home: (entry, dash, extension)."""
    for p in range(len(local), -1, -1):
        if p >= USERLEN:
            continue
        if p != len(local) and local[p:p + 1] != auto.BREAK:
            continue
        pw = getpwnam(local[:p].lower())
        if pw is None or pw.pw_uid == 0:
            continue
        try:
            st = os.stat(pw.pw_dir)
        except OSError as e:
            if errors.is_temporary(e):
                raise SystemExit(QLX_NFS) from None
            continue
        if st.st_uid == pw.pw_uid:
            if p == len(local):
                return pw, b"", b""
            return pw, b"-", local[p + 1:]
    return None


def lookup(local: bytes) -> tuple[int, bytes]:
    """(exit code, `user\0uid\0gid\0home\0dash\0ext\0`) for a local part."""
    try:
        found = userext(local)
    except SystemExit as e:
        return e.code, b""
    if found is None:
        pw = getpwnam(auto.USER_ALIAS)
        if pw is None:
            return QLX_NOALIAS, b""
        found = pw, b"-", local
    pw, dash, ext = found
    return 0, b"%s\0%d\0%d\0%s\0%s\0%s\0" % (os.fsencode(pw.pw_name), pw.pw_uid, pw.pw_gid,
                                              os.fsencode(pw.pw_dir), dash, ext)


def run(argv: list[bytes], out_fd: int) -> int:
    if len(argv) < 2:
        return 100
    code, record = lookup(argv[1])
    if code:
        return code
    try:
        fdio.write_all(out_fd, record)
    except OSError:
        return QLX_SYS
    return 0


def serve(sock) -> None:
    """qmail-lspawn's resident qmail-getpw (uid qmailp): each request is a local
    part with a socket attached; the answer (exit code byte + record) goes back
    on that socket.  Ends when qmail-lspawn closes its end."""
    import array
    import socket
    while True:
        fds = array.array("i")
        try:
            local, ancdata, flags, _ = sock.recvmsg(2048, socket.CMSG_SPACE(fds.itemsize))
        except InterruptedError:
            continue
        except OSError:
            return
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
        if not local and not fds:
            return
        if len(fds) != 1 or flags & socket.MSG_TRUNC:
            # a local part longer than our buffer: say nothing, and the asker
            # runs a qmail-getpw of its own with the whole of it
            for fd in fds:
                os.close(fd)
            continue
        code, record = lookup(local)
        try:
            fdio.write_all(fds[0], bytes((code,)) + record)
        except OSError:
            pass
        os.close(fds[0])


def main() -> None:
    code = QLX_SYS
    try:
        code = run([os.fsencode(a) for a in sys.argv], 1)
    finally:
        os._exit(code)
