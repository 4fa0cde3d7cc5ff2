"""tcp-env: set up the TCP environment of a server started by inetd, then run
it (spec/admin-tools.md §7).

    tcp-env [-rR] [-t timeout] program [arg ...]

fd 0 is the connection.  Sets PROTO=TCP, TCPLOCALIP, TCPLOCALPORT, TCPLOCALHOST,
TCPREMOTEIP, TCPREMOTEPORT, TCPREMOTEHOST and (with -r, the default) TCPREMOTEINFO
from an RFC 1413 query; any failure is exit 111, silently.  qmail's tcp-env
knows IPv4 only; pyqmail also accepts IPv6 connections (v4-mapped addresses are
given as plain IPv4).
"""
import os
import sys

from pyqmail import environ

IDENT_PORT = 113
IDENT_MAX = 998        # remoteinfo.c's line[999]
SOFT = b"softdnserror"


class Die(Exception):
    """tcp-env's die(): exit 111."""


def parse_options(argv: list[bytes]) -> tuple[bool, int, list[bytes]]:
    """sgopt(argc, argv, "rRt:"): (flagremoteinfo, timeout, program argv)."""
    flagremoteinfo = True
    timeout = 30
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(b"--"):
            i += 1                   # subgetopt: "--anything" ends the options
            break
        if not arg.startswith(b"-") or arg == b"-":
            break
        i += 1
        j = 1
        while j < len(arg):
            opt = arg[j:j + 1]
            j += 1
            if opt == b"r":
                flagremoteinfo = True
            elif opt == b"R":
                flagremoteinfo = False
            elif opt == b"t":
                if j < len(arg):
                    value = arg[j:]
                elif i < len(argv):
                    value = argv[i]
                    i += 1
                else:
                    break            # missing argument: ignored, as unknown letters are
                end = 0
                while end < len(value) and 48 <= value[end] <= 57:
                    end += 1
                timeout = int(value[:end]) if end else 0
                break
    return flagremoteinfo, timeout, argv[i:]


def split_address(address) -> tuple[bytes, int]:
    """A getsockname()/getpeername() result as (ip text, port)."""
    host, port = address[0], address[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host.encode("ascii"), port


def dns_ptr(ip: bytes) -> bytes | None:
    """The first PTR name for ip, as dn_expand() writes it (special bytes
    escaped), lowercased; SOFT on a temporary DNS failure; None when there is
    none (qmail's dns_ptr)."""
    import dns.exception
    import dns.resolver
    import dns.reversename
    try:
        answer = dns.resolver.resolve(dns.reversename.from_address(ip.decode()), "PTR",
                                      search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except (dns.exception.DNSException, OSError):
        return SOFT
    for record in answer:
        # dnspython's text form is dn_expand's: bytes outside ! .. ~ as \DDD,
        # `".;\()@$` after a backslash; so no NUL or control byte gets through
        return record.target.to_text(omit_final_dot=True).encode("ascii").lower()
    return None


def remoteinfo(remote: tuple[bytes, int], local: tuple[bytes, int], timeout: int,
               family: int) -> bytes | None:
    """remoteinfo_get(): ask the client's identd (RFC 1413); None on any failure."""
    import socket
    from pyqmail import control
    timeout = control.c_int(timeout)  # tcp-env.c passes its unsigned long as (int) timeout
    if timeout < 0:
        return None                  # select() refuses a negative timeout
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((local[0].decode(), 0))
            s.settimeout(timeout)
            s.connect((remote[0].decode(), IDENT_PORT))
            s.sendall(b"%d , %d\r\n" % (remote[1], local[1]))
            out = bytearray()
            colons = 0
            while True:
                chunk = s.recv(32)
                if not chunk:
                    return None
                for ch in chunk:
                    if ch in b" \t\r":
                        continue
                    if ch == 0x0a:
                        return bytes(out).split(b"\0", 1)[0]  # env_put2: a C string
                    if colons < 3:
                        if ch == 0x3a:
                            colons += 1
                    else:
                        out.append(ch)
                        if len(out) == IDENT_MAX:
                            return bytes(out).split(b"\0", 1)[0]
    except OSError:
        return None


def tcp_environment(env: dict[bytes, bytes], flagremoteinfo: bool, timeout: int) -> None:
    """Fill env from the connection on fd 0."""
    import socket
    env[b"PROTO"] = b"TCP"
    try:
        sock = socket.socket(fileno=os.dup(0))
    except OSError:
        raise Die() from None
    with sock:
        try:
            local = split_address(sock.getsockname())
            remote = split_address(sock.getpeername())
        except (OSError, IndexError, TypeError):
            raise Die() from None
        family = socket.AF_INET6 if b":" in remote[0] else socket.AF_INET
    env[b"TCPLOCALPORT"] = b"%d" % local[1]
    env[b"TCPLOCALIP"] = local[0]
    name = dns_ptr(local[0])
    if name is None:
        env.pop(b"TCPLOCALHOST", None)
    else:
        env[b"TCPLOCALHOST"] = name
    env[b"TCPREMOTEPORT"] = b"%d" % remote[1]
    env[b"TCPREMOTEIP"] = remote[0]
    name = dns_ptr(remote[0])
    if name is None:
        env.pop(b"TCPREMOTEHOST", None)
    else:
        env[b"TCPREMOTEHOST"] = name
    env.pop(b"TCPREMOTEINFO", None)
    if flagremoteinfo:
        info = remoteinfo(remote, local, timeout, family)
        if info is not None:
            env[b"TCPREMOTEINFO"] = info


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    """tcp-env(1): returns only on failure (111); otherwise execs the program."""
    flagremoteinfo, timeout, program = parse_options(argv)
    if not program:
        return 111
    try:
        if env.get(b"PROTO") != b"TCP":
            tcp_environment(env, flagremoteinfo, timeout)
        import signal
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execvpe(program[0], program, env)
    except Exception:
        # die(): no program, not a socket, DNS trouble, exec failure; tcp-env
        # says nothing (inetd's client sees the connection close)
        return 111
    return 111


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
