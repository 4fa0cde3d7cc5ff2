"""qmail-tcpsrv: tcpserver (ucspi-tcp 0.88) without an exec per connection for
pyqmail's own programs.

    qmail-tcpsrv [ -UXhHrRdDqQv ] [ -c limit ] [ -x rules.cdb ] [ -g gid ] [ -u uid ]
                 [ -b backlog ] [ -l localname ] [ -t timeout ] host port program [arg ...]

The options, the rules cdb (tcprules; spec/install.md §6.2), the environment
(PROTO, TCPLOCALIP, TCPLOCALPORT, TCPLOCALHOST, TCPREMOTEIP, TCPREMOTEPORT,
TCPREMOTEHOST, TCPREMOTEINFO), the exit codes and every stderr line are
tcpserver's, down to the `tcpserver:` prefix that log readers look for, so a
tcpserver command line for qmail works with tcpserver replaced by qmail-tcpsrv.

The difference: when program is QMAIL_HOME/bin/NAME of this installation and
that file is pyqmail's wrapper for a program module, the listener imports the
module once, and each connection's forked child renames itself to NAME (comm
and argv[0], INTERFACE.md §3) and calls the module's main() in-process, with
the same argv, environment, fds and signal state as the exec'd program would
have.  Any other program is exec'd, as tcpserver does.

Beyond tcpserver 0.88:
- host `0` (or empty) listens on all IPv4 and IPv6 addresses; an IPv6 host such
  as `::1` works.  An IPv4 client of a dual-stack listener looks exactly as under
  tcpserver.  An IPv6 client gets ucspi-tcp-ipv6's environment: PROTO=TCP6, the
  addresses in their compressed form (`::1`) in TCPLOCALIP/TCPREMOTEIP, and every
  TCP* variable repeated as TCP6* (TCP6LOCALIP, ..., TCP6REMOTEINFO); its rules
  are looked up by that address and then its prefixes ending in `:` as well as `.`.
- a rules entry `-VAR` unsets VAR (spec/install.md §6.2; tcprules never writes one).
- -l, -H/-h and -R/-r work as in tcpserver; DNS (PTR for TCPREMOTEHOST and, without
  -l, TCPLOCALHOST) asks the servers of /etc/resolv.conf or $DNSCACHEIP, as
  tcpserver's djbdns library does.

A program module that says so (REUSABLE, and a forked_main(env) that keeps
nothing between calls: qmail-smtpd) has its sessions served by processes that
each take one connection after another, as Postfix's smtpd processes do,
instead of a fork per connection.  The listener still accepts, counts, limits
(-c) and logs every connection as tcpserver does; it hands each one to an idle
process over that process's socket pair (SCM_RIGHTS), forking a new one only
when none is idle.  Each session starts as a forked child's would: the
environment made afresh from the listener's and the rules, fds 0 and 1 the
connection and nothing else open but the process's socket pair (close-on-exec),
the listener's cwd, umask and signal dispositions; at its end 0 and 1 become
/dev/null again, which closes the connection.  `tcpserver: end PID status S`
is logged when a session ends, S the wait status its exit code would give.  A
process serves at most MAX_USE sessions, goes after MAX_IDLE seconds without
one, and goes at once after a session that ended in an uncaught exception or
changed what cannot be put back (its ids, its fd 2, a cwd gone, a signal
handler set outside Python): the next one never inherits anything from it
but the code.

SIGTERM ends the listener at once with exit 0, as tcpserver's: the port is
closed and the sessions under way finish on their own; the idle processes see
their socket pair close and exit.
"""
import _signal
import _socket
import gc
import os
import select
import signal
import socket
import sys
import time

from pyqmail import cdb, environ, errors, prot, proctitle, wrapper
from pyqmail.sgetopt import Getopt

FATAL = b"tcpserver: fatal: "
DROP = b"tcpserver: warning: dropping connection, "
USAGE = (b"tcpserver: usage: qmail-tcpsrv [ -UXhHrRdDqQv ] [ -c limit ] [ -x rules.cdb ] "
         b"[ -g gid ] [ -u uid ] [ -b backlog ] [ -l localname ] [ -t timeout ] "
         b"host port program")
IDENT_PORT = 113
IDENT_MAX = 256          # remoteinfo.c: stop once more than 256 bytes are kept
SAFE_MAX = 100           # safecats(): at most 100 characters of a field, then "..."
EXIT_DENY = 100          # a deny rule: the child exits 100 without running the program
MAX_USE = 100            # sessions one process serves before it exits (Postfix's max_use)
MAX_IDLE = 100           # seconds an idle process waits for a session (Postfix's max_idle)


class Fatal(Exception):
    """tcpserver's strerr_die(111, FATAL, ...)."""

    def __init__(self, text: bytes, code: int = 111):
        super().__init__(text)
        self.text = text
        self.code = code


class Options:
    """The command line, as tcpserver's getopt loop leaves its variables."""

    def __init__(self):
        self.verbosity = 1
        self.limit = 40
        self.backlog = 20
        self.uid = 0
        self.gid = 0
        self.rules: bytes | None = None
        self.allow_no_rules = False
        self.delay = True
        self.remotehost = True
        self.remoteinfo = True
        self.timeout = 26
        self.localhost: bytes | None = None
        self.host = b""
        self.port = b""
        self.program: list[bytes] = []


def scan_ulong(value: bytes) -> tuple[int, int]:
    """scan_ulong(): (value of the leading digits, number of digits)."""
    end = 0
    while end < len(value) and 48 <= value[end] <= 57:
        end += 1
    return (int(value[:end]) if end else 0), end


def parse_options(argv: list[bytes], env: dict[bytes, bytes]) -> Options:
    """tcpserver's option loop; Fatal(usage, 100) on a bad command line."""
    o = Options()
    opts = Getopt(argv, b"UXhHrRdDqQvc:x:g:u:b:l:t:")
    while (opt := opts.next()) is not None:
        arg = opts.optarg or b""
        if opt == b"b":
            o.backlog = scan_ulong(arg)[0]
        elif opt == b"c":
            o.limit = scan_ulong(arg)[0]
        elif opt == b"X":
            o.allow_no_rules = True
        elif opt == b"x":
            o.rules = arg
        elif opt == b"d":
            o.delay = True
        elif opt == b"D":
            o.delay = False
        elif opt == b"v":
            o.verbosity = 2
        elif opt == b"q":
            o.verbosity = 0
        elif opt == b"Q":
            o.verbosity = 1
        elif opt == b"H":
            o.remotehost = False
        elif opt == b"h":
            o.remotehost = True
        elif opt == b"R":
            o.remoteinfo = False
        elif opt == b"r":
            o.remoteinfo = True
        elif opt == b"t":
            o.timeout = scan_ulong(arg)[0]
        elif opt == b"U":
            if b"UID" in env:
                o.uid = scan_ulong(env[b"UID"])[0]
            if b"GID" in env:
                o.gid = scan_ulong(env[b"GID"])[0]
        elif opt == b"u":
            o.uid = scan_ulong(arg)[0]
        elif opt == b"g":
            o.gid = scan_ulong(arg)[0]
        elif opt == b"l":
            o.localhost = arg
        else:
            raise Fatal(USAGE, 100)
    rest = argv[opts.optind:]
    if len(rest) < 3:
        raise Fatal(USAGE, 100)
    o.host, o.port, o.program = rest[0], rest[1], rest[2:]
    return o


# --- the rules cdb (ucspi-tcp rules.c, tcpserver.c's found()) ---------------------

def rule_keys(ip: bytes, host: bytes | None, info: bytes | None):
    """rules(): the keys to try, first match wins."""
    if info is not None:
        yield info + b"@" + ip
        if host is not None:
            yield info + b"@=" + host
    yield ip
    if host is not None:
        yield b"=" + host
    seps = b".:" if b":" in ip else b"."
    for n in range(len(ip), 0, -1):
        if ip[n - 1] in seps:
            yield ip[:n]
    if host is not None:
        for i in range(len(host)):
            if host[i] == 0x2e:
                yield b"=" + host[i:]
        yield b"="
    yield b""


def apply_rule(data: bytes, env: dict[bytes, bytes]) -> bool:
    """found(): apply one record's entries to env; True if it says deny."""
    deny = False
    while (nul := data.find(b"\0")) >= 0:
        entry, data = data[:nul], data[nul + 1:]
        kind = entry[:1]
        if kind == b"D":
            deny = True
        elif kind == b"+":
            name, eq, value = entry[1:].partition(b"=")
            if eq and name:
                env[name] = value
        elif kind == b"-" and len(entry) > 1:
            env.pop(entry[1:], None)
    return deny


def check_rules(path: bytes, allow_missing: bool, ip: bytes, host: bytes | None,
                info: bytes | None, env: dict[bytes, bytes]) -> bool:
    """Open the rules cdb now (tcprules may have replaced it) and apply the first
    matching record; True for deny.  Fatal(DROP text) when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and allow_missing:
            return False
        raise Fatal(DROP + b"unable to read %s: %s" % (path, errors.error_str(e))) from None
    try:
        for key in rule_keys(ip, host, info):
            data = cdb.find(fd, key, path)
            if data is not None:
                return apply_rule(data, env)
    except OSError as e:
        raise Fatal(DROP + b"unable to read %s: %s" % (path, errors.error_str(e))) from None
    except cdb.CdbError:
        raise Fatal(DROP + b"unable to read %s: protocol error" % path) from None
    finally:
        os.close(fd)
    return False


# --- DNS and ident -------------------------------------------------------------------

def ptr_name(ip: bytes) -> bytes:
    """The reverse-lookup name of an address."""
    if b":" in ip:
        packed = socket.inet_pton(socket.AF_INET6, ip.decode("ascii"))
        nibbles = packed.hex()[::-1]
        return b".".join(c.encode("ascii") for c in nibbles) + b".ip6.arpa"
    return b".".join(reversed(ip.split(b"."))) + b".in-addr.arpa"


def todot(labels) -> bytes:
    """dns_domain_todot_cat(): lowercase, and \\ooo for bytes outside [a-z0-9_-]."""
    out = []
    for label in labels:
        text = bytearray()
        for ch in label:
            if 65 <= ch <= 90:
                ch += 32
            if 97 <= ch <= 122 or 48 <= ch <= 57 or ch in b"-_":
                text.append(ch)
            else:
                text += b"\\%03o" % ch
        out.append(bytes(text))
    return b".".join(out) if out else b"."


def dns_name(ip: bytes, env: dict[bytes, bytes]) -> bytes | None:
    """dns_name4(): the first PTR name of ip; None when there is none or the
    lookup fails (tcpserver then leaves the name unset)."""
    from pyqmail import qdns
    import dns.rdatatype
    try:
        records = qdns.Resolver(env).query(ptr_name(ip), dns.rdatatype.PTR)
    except (qdns.Soft, qdns.Hard, OSError, ValueError):
        return None
    for record in records:
        return todot([label for label in record.target.labels if label])
    return None


def remoteinfo(family: int, remote: tuple[bytes, int], local: tuple[bytes, int],
               timeout: int) -> bytes | None:
    """remoteinfo(): ask the client's identd (RFC 1413) within timeout seconds;
    None on any failure."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((local[0].decode("ascii"), 0))
            s.settimeout(timeout)
            s.connect((remote[0].decode("ascii"), IDENT_PORT))
            s.sendall(b"%d , %d\r\n" % (remote[1], local[1]))
            out = bytearray()
            colons = 0
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                s.settimeout(left)
                chunk = s.recv(128)
                if not chunk:
                    return None
                for ch in chunk:
                    if ch in b" \t\r":
                        continue
                    if ch == 0x0a:
                        return bytes(out)
                    if colons < 3:
                        if ch == 0x3a:
                            colons += 1
                    else:
                        out.append(ch)
                        if len(out) > IDENT_MAX:
                            return bytes(out)
    except (OSError, ValueError):
        return None


# --- one connection (tcpserver's doit(), in the forked child) -----------------------

SAFE_TABLE = bytes(0x3f if ch < 33 or ch > 126 or ch in b"%:" else ch for ch in range(256))


def safe(text: bytes) -> bytes:
    """safecats(): at most 100 printable characters, `?` for the rest and for `%`, `:`."""
    out = text[:SAFE_MAX].translate(SAFE_TABLE)
    return out + b"..." if len(text) > SAFE_MAX else out


def address(sockaddr) -> tuple[bytes, int, bytes | None]:
    """(ip text, port, IPv6 interface) of a socket address; v4-mapped as IPv4."""
    host, port = sockaddr[0], sockaddr[1]
    scope = None
    if "%" in host:
        host, scope = host.split("%", 1)
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host.encode("ascii"), port, (scope.encode("ascii") if scope else None)


class Listener:
    """What the children of one listener share: options, program, environment."""

    def __init__(self, o: Options, env: dict[bytes, bytes], module=None, title=None):
        self.o = o
        self.env = env
        self.module = module      # the program's module, when it runs in-process
        self.title = title        # proctitle.rename's preparation
        # a process may serve one session after another (see the docstring)
        self.reusable = (module is not None and getattr(module, "REUSABLE", False)
                         and getattr(module, "forked_main", None) is not None)
        self.failed = False       # the program ended in an uncaught exception
        # the environment every child starts with, as a plain dict: a child
        # compares against this, not against os.environb (Python code per key)
        self.inherited = dict(os.environb)

    def log(self, line: bytes, level: int = 2) -> None:
        if self.o.verbosity >= level:
            errors.write_line(2, line)

    def setup(self, conn: _socket.socket, remote_address) -> tuple[dict[bytes, bytes], bool]:
        """doit(): the program's environment and whether a rule denies the client."""
        o = self.o
        remoteip, remoteport, _ = address(remote_address)
        if o.verbosity >= 2:
            self.log(b"tcpserver: pid %d from %s" % (os.getpid(), remoteip))
        six = b":" in remoteip
        # an IPv4 socket (its address is a pair; socket.family's enum would
        # cost a forked child pages of enum code)
        if len(remote_address) == 2:
            try:
                conn.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"")
            except OSError:
                pass
        if not o.delay:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            localip, localport, scope = address(conn.getsockname())
        except OSError as e:
            raise Fatal(DROP + b"unable to get local address: " + errors.error_str(e)) from None
        localhost = o.localhost
        if localhost is None:
            localhost = dns_name(localip, self.env)
        remotehost = dns_name(remoteip, self.env) if o.remotehost else None
        info = None
        if o.remoteinfo:
            family = socket.AF_INET6 if six else socket.AF_INET
            info = remoteinfo(family, (remoteip, remoteport), (localip, localport), o.timeout)

        env = dict(self.env)
        values = [(b"LOCALIP", localip), (b"LOCALPORT", b"%d" % localport),
                  (b"LOCALHOST", localhost), (b"REMOTEIP", remoteip),
                  (b"REMOTEPORT", b"%d" % remoteport), (b"REMOTEHOST", remotehost),
                  (b"REMOTEINFO", info)]
        env[b"PROTO"] = b"TCP6" if six else b"TCP"
        for prefix in ((b"TCP", b"TCP6") if six else (b"TCP",)):
            for name, value in values:
                if value is None:
                    env.pop(prefix + name, None)
                else:
                    env[prefix + name] = value
        if six and scope is not None:
            env[b"TCP6INTERFACE"] = scope

        deny = False
        if o.rules is not None:
            deny = check_rules(o.rules, o.allow_no_rules, remoteip, remotehost, info, env)
        if o.verbosity >= 2:
            self.log(b"tcpserver: %s %d %s:%s:%s %s:%s:%s:%s" % (
                b"deny" if deny else b"ok", os.getpid(), safe(localhost or b""), safe(localip),
                safe(b"%d" % localport), safe(remotehost or b""), safe(remoteip),
                safe(info or b""), safe(b"%d" % remoteport)))
        return env, deny

    def connection(self, conn: _socket.socket, remote_address, keep: int = -1) -> int:
        """The child: set up, then run the program; its exit code.  keep is
        a descriptor above 2 that stays open (a reusable process's socket pair)."""
        env, deny = self.setup(conn, remote_address)
        if deny:
            return EXIT_DENY
        try:
            os.dup2(conn.fileno(), 0)
            os.dup2(0, 1)
        except OSError as e:
            raise Fatal(DROP + b"unable to set up descriptors: " + errors.error_str(e)) from None
        conn.close()
        if self.module is None:    # the exec closes the rest (Python's fds are close-on-exec)
            return self.execute(env)
        return self.in_process(env, keep)

    def execute(self, env: dict[bytes, bytes]) -> int:
        """pathexec(): the program with the signal state after tcpserver's
        sig_uncatch()es and an exec (no handlers, nothing ignored)."""
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        program = self.o.program
        try:
            os.execvpe(program[0], program, env)
        except OSError as e:
            raise Fatal(DROP + b"unable to run %s: %s" % (program[0], errors.error_str(e))) from None
        return 111

    def in_process(self, env: dict[bytes, bytes], keep: int = -1) -> int:
        """What exec'ing the wrapper QMAIL_HOME/bin/NAME would do, without the exec:
        the same argv, environment and fds, the signal state a new interpreter
        starts with (the listener's: SIGPIPE and SIGXFSZ ignored, SIGINT raising
        KeyboardInterrupt), then main(); or, for a module with forked_main(env)
        (the environment main() would find, returning the exit code), that,
        which needs neither os.environ nor sys.argv."""
        argv = self.o.program
        proctitle.rename(self.title, argv)
        close_from_3(keep)
        _signal.signal(signal.SIGINT, _signal.default_int_handler)
        forked_main = getattr(self.module, "forked_main", None)
        code = 0
        try:
            if forked_main is not None:
                code = exit_status(forked_main(env))
            else:
                self.set_environment(env)
                sys.argv = [os.fsdecode(a) for a in argv]
                self.module.main()
        except SystemExit as e:
            code = exit_status(e.code)
        except BaseException:
            sys.excepthook(*sys.exc_info())
            self.failed = True
            code = 1
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        return code

    def set_environment(self, env: dict[bytes, bytes]) -> None:
        """os.environb := what a new interpreter given env would have: it would
        change its environment again as ours did at start (PEP 538 sets
        LC_CTYPE=C.UTF-8 in the C locale), and the program's environ.original()
        undoes that again.  A putenv()/unsetenv() for each difference only."""
        env = dict(env)
        for name, (given, made) in environ.STARTUP.items():
            if env.get(name) == given:
                if made is None:
                    env.pop(name, None)
                else:
                    env[name] = made
        inherited = self.inherited
        for name in [name for name in inherited if name not in env]:
            del os.environb[name]
        for name, value in env.items():
            if inherited.get(name) != value:
                os.environb[name] = value


def close_from_3(keep: int = -1) -> None:
    """Close every descriptor above 2 but keep (-1: keep none)."""
    if keep >= 3:
        os.closerange(3, keep)
    os.closerange(max(keep + 1, 3), os.sysconf("SC_OPEN_MAX"))


def exit_status(code) -> int:
    """The interpreter's handling of SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write("%s\n" % (code,))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return 1


# --- the listener -----------------------------------------------------------------

def in_process_module(program: bytes):
    """The module behind program when it is this installation's wrapper for a
    pyqmail program (the same script as ours but for the module line), else None."""
    own_path = os.fsencode(sys.argv[0]) if sys.argv and sys.argv[0] else b""
    name = wrapper.module_name(program, own_path, __name__.rpartition(".")[2])
    if name is None:
        return None
    import importlib
    try:
        return importlib.import_module("pyqmail." + name)
    except ImportError:
        return None


def local_address(host: bytes) -> tuple[int, str]:
    """The family and address to bind: host 0 is every IPv6 and IPv4 address."""
    if host in (b"", b"0"):
        if socket.has_ipv6:
            try:
                socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close()
                return socket.AF_INET6, "::"
            except OSError:
                pass
        return socket.AF_INET, "0.0.0.0"
    text = host.decode("ascii", "replace")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
            return family, text
        except OSError:
            pass
    try:
        found = socket.getaddrinfo(text, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        found = []
    if not found:
        raise Fatal(FATAL + b"no IP address for " + host)
    family, _, _, _, sockaddr = found[0]
    return family, sockaddr[0]


def port_number(port: bytes) -> int:
    value, digits = scan_ulong(port)
    if digits == len(port):
        return value & 0xFFFF
    try:
        return socket.getservbyname(port.decode("ascii"), "tcp")
    except (OSError, UnicodeError):
        raise Fatal(FATAL + b"unable to figure out port number for " + port) from None


def bind(o: Options) -> socket.socket:
    """The listening socket, bound with SO_REUSEADDR as socket_bind4_reuse()."""
    family, host = local_address(o.host)
    port = port_number(o.port)
    try:
        s = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        raise Fatal(FATAL + b"unable to create socket: " + errors.error_str(e)) from None
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host == "::":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    try:
        s.bind((host, port))
    except OSError as e:
        raise Fatal(FATAL + b"unable to bind: " + errors.error_str(e)) from None
    try:
        s.listen(o.backlog)
    except OSError as e:
        raise Fatal(FATAL + b"unable to listen: " + errors.error_str(e)) from None
    s.setblocking(False)
    return s


def drop(o: Options) -> None:
    """prot_gid(gid) if gid, then prot_uid(uid) if uid: before the first accept."""
    if not o.gid and not o.uid:
        return
    gid = o.gid if o.gid else os.getgid()
    groups = [o.gid] if o.gid else os.getgroups()
    try:
        prot.drop(o.uid if o.uid else os.getuid(), gid, groups)
    except OSError as e:
        raise Fatal(FATAL + b"unable to set %s: %s" % (b"uid" if o.uid else b"gid",
                                                       errors.error_str(e))) from None


def child_start(closing: list[int]) -> None:
    """What a forked child undoes first: the listener's signal handling, and
    the descriptors that are the listener's alone."""
    # _signal's functions, not signal's wrappers: their enum conversions,
    # run for the first time in each child, cost it a copy of every page
    # they touch
    _signal.set_wakeup_fd(-1)
    _signal.signal(signal.SIGCHLD, _signal.SIG_DFL)
    _signal.signal(signal.SIGTERM, _signal.SIG_DFL)
    _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
    for other in closing:
        os.close(other)


def session(listener: Listener, fd: int, remote_address, keep: int = -1) -> int:
    """One connection, given its fd: the exit code a child would end with."""
    conn = None
    try:
        # _socket's type, not socket.py's subclass: its Python __init__ and
        # close(), run for the first time in each child, cost it their pages
        conn = _socket.socket(fileno=fd)
        conn.setblocking(True)
        return listener.connection(conn, remote_address, keep)
    except Fatal as e:
        listener.log(e.text, 1)
        return e.code
    except BaseException:
        listener.log(DROP + b"internal error", 1)
        listener.failed = True
        return 111
    finally:
        if conn is not None:
            conn.close()      # a no-op once connection() has moved it to 0 and 1


def child(listener: Listener, fd: int, remote_address, closing: list[int]) -> None:
    """The forked child, given the connection's fd: never returns into the accept loop."""
    code = 111
    try:
        child_start(closing)
        code = session(listener, fd, remote_address)
    except BaseException:
        listener.log(DROP + b"internal error", 1)
    finally:
        os._exit(code)


class Fresh:
    """The state a reusable process's sessions start in, taken before its first."""

    def __init__(self):
        self.ids = (os.getresuid(), os.getresgid(), os.getgroups())
        self.umask = os.umask(0o077)
        os.umask(self.umask)
        self.signals = {sig: _signal.getsignal(sig) for sig in _signal.valid_signals()}
        self.stderr = file_id(2)
        try:
            self.cwd: str | None = os.getcwd()
            self.cwd_id = os.stat(".")[1:3]     # (st_ino, st_dev)
        except OSError:
            self.cwd = None

    def restore(self, keep: int) -> bool:
        """After a session: close the connection (0 and 1 become /dev/null
        again) and whatever else it left open but keep, and put back the
        umask, the signal mask and dispositions and the cwd; False when the
        process is not fit for another session."""
        # what the session left for the collector goes first, closing what it
        # owns: a descriptor closed under a live object would be closed again
        # when the object goes, by then perhaps the next session's
        gc.collect()
        try:
            close_from_3(keep)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.close(devnull)
            os.umask(self.umask)
            _signal.pthread_sigmask(_signal.SIG_SETMASK, ())
            for sig, handler in self.signals.items():
                if _signal.getsignal(sig) != handler:
                    if handler is None:    # set outside Python: cannot be put back
                        return False
                    _signal.signal(sig, handler)
            if self.cwd is None or (os.getresuid(), os.getresgid(), os.getgroups()) != self.ids:
                return False
            if self.stderr is None or file_id(2) != self.stderr:   # the log is not ours to reopen
                return False
            os.chdir(self.cwd)
            return os.stat(".")[1:3] == self.cwd_id
        except (OSError, ValueError):
            return False


def file_id(fd: int) -> tuple[int, int] | None:
    """(st_ino, st_dev) of what fd is open on; None if it is not open."""
    try:
        return os.fstat(fd)[1:3]
    except OSError:
        return None


def pack_address(sockaddr) -> bytes:
    """A client's address as the listener hands it to a reusable process."""
    return "\0".join(str(part) for part in sockaddr).encode("ascii")


def unpack_address(data: bytes) -> tuple | None:
    """pack_address()'s inverse; None for anything else."""
    host, *numbers = data.split(b"\0")
    if len(numbers) not in (1, 3) or not host.isascii() or not all(n.isdigit() for n in numbers):
        return None
    return (host.decode("ascii"), *(int(n) for n in numbers))


def next_connection(channel: socket.socket) -> tuple[int, tuple] | None:
    """The next connection the listener hands this process: (fd, the client's
    address); None once the listener has closed the socket pair."""
    try:
        data, ancillary, _, _ = channel.recvmsg(512, socket.CMSG_SPACE(4))
    except OSError:
        return None
    fds = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += [int.from_bytes(payload[i:i + 4], sys.byteorder)
                    for i in range(0, len(payload) - 3, 4)]
    address = unpack_address(data) if len(fds) == 1 else None
    if address is not None:
        return fds[0], address
    for fd in fds:
        os.close(fd)
    return None


def worker(listener: Listener, channel: socket.socket, fd: int, remote_address,
           closing: list[int]) -> None:
    """A reusable process: the connection it was forked for, then each one the
    listener sends over channel, reporting the end of each (`S` and the exit
    code, or `R` and it when it will serve no more); it exits after MAX_USE
    sessions, a session that leaves it unfit, or when the listener is gone."""
    code = 111
    try:
        child_start(closing)
        fresh = Fresh()
        keep = channel.fileno()
        uses = 0
        while True:
            code = session(listener, fd, remote_address, keep)
            uses += 1
            again = fresh.restore(keep) and not listener.failed and uses < MAX_USE
            try:
                channel.send(b"%s%d" % (b"S" if again else b"R", code))
            except OSError:
                break
            if not again:
                break
            handed = next_connection(channel)
            if handed is None:
                break
            fd, remote_address = handed
    except BaseException:
        listener.log(DROP + b"internal error", 1)
    finally:
        os._exit(code)


class Worker:
    """The listener's view of one reusable process."""
    __slots__ = ("pid", "channel", "fd", "busy", "since")

    def __init__(self, pid: int, channel: socket.socket):
        self.pid = pid
        self.channel = channel    # the listener's end of its socket pair
        self.fd = channel.fileno()
        self.busy = True          # in a session (the listener has not had its report)
        self.since = 0.0          # idle since (time.monotonic())

    def report(self) -> bytes | None:
        """The end of its session, as it sent it (b"S0", b"R111", ...); None
        when there is none (it died, or sent something else)."""
        try:
            data = self.channel.recv(16, socket.MSG_DONTWAIT)
        except OSError:
            return None
        if data[:1] in (b"S", b"R") and data[1:].isdigit():
            return data
        return None

    def hand_over(self, fd: int, remote_address) -> bool:
        """Send it a connection; False when it cannot take one."""
        try:
            self.channel.sendmsg([pack_address(remote_address)],
                                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))],
                                 socket.MSG_DONTWAIT)
        except OSError:
            return False
        return True


def serve(listener: Listener, s: socket.socket) -> int:
    """The accept loop: at most -c sessions at a time, each in a child of its
    own or in an idle reusable process, until SIGTERM."""
    o = listener.o
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: None)
    children = 0          # sessions under way: tcpserver's numchildren
    workers: dict[int, Worker] = {}     # the reusable processes, by pid
    busy: dict[int, Worker] = {}        # those whose report is awaited, by their channel's fd
    idle: list[Worker] = []             # the others, the longest idle first
    # poll, not select: with -c in the hundreds the channels' numbers pass FD_SETSIZE
    poller = select.poll()
    poller.register(wake_r, select.POLLIN)
    listening = False     # s is among the polled: fewer than -c sessions
    # what the listener holds now stays out of the collector's way: a child's
    # collections then walk (and copy) only what the child made
    gc.collect()
    gc.freeze()

    def status():
        if o.verbosity >= 2:
            listener.log(b"tcpserver: status: %d/%d" % (children, o.limit))

    def end(pid: int, wstat: int) -> None:
        nonlocal children
        if o.verbosity >= 2:
            listener.log(b"tcpserver: end %d status %d" % (pid, wstat))
        if children:
            children -= 1
        status()

    def await_report(w: Worker) -> None:
        busy[w.fd] = w
        poller.register(w.fd, select.POLLIN)

    def no_report(w: Worker) -> None:
        if busy.pop(w.fd, None) is not None:
            poller.unregister(w.fd)

    def reported(w: Worker, report: bytes) -> None:
        """A reusable process's session ended: log it as its exit; idle it."""
        no_report(w)
        w.busy = False
        end(w.pid, (int(report[1:]) & 0xFF) << 8)
        if report[:1] == b"S":
            w.since = time.monotonic()
            idle.append(w)
        else:
            w.channel.close()

    status()
    while True:
        now = time.monotonic()
        while idle and now - idle[0].since >= MAX_IDLE:
            idle.pop(0).channel.close()     # it sees the socket pair close, and exits
        timeout = None if not idle else max(0, int((idle[0].since + MAX_IDLE - now) * 1000) + 1)
        if listening != (children < o.limit):
            listening = not listening
            if listening:
                poller.register(s, select.POLLIN)
            else:
                poller.unregister(s)
        ready = {fd for fd, _ in poller.poll(timeout)}
        for fd in ready:
            w = busy.get(fd)
            if w is not None:
                report = w.report()
                if report is None:
                    no_report(w)      # dying: its exit status is the session's
                else:
                    reported(w, report)
        if wake_r in ready:
            try:
                signals = os.read(wake_r, 512)
            except BlockingIOError:
                signals = b""
            while True:
                try:
                    pid, wstat = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                w = workers.pop(pid, None)
                if w is None:
                    end(pid, wstat)
                    continue
                if w.busy:
                    report = w.report()
                    if report is None:
                        no_report(w)
                        end(pid, wstat)
                    else:
                        reported(w, report)
                if w in idle:
                    idle.remove(w)
                w.channel.close()
            if signal.SIGTERM in signals:
                s.close()
                return 0
            continue
        if s.fileno() not in ready or children >= o.limit:
            continue
        try:
            # socket.accept() would convert the family and type to enums; the
            # socket object is the child's to make (socket.py's Python code
            # run here would cost the listener a copy of each page it writes
            # while a child shares them)
            fd, remote_address = s._accept()
        except OSError:
            continue
        children += 1
        status()
        while idle:
            w = idle.pop()            # the one idle the shortest time: the warmest
            if w.hand_over(fd, remote_address):
                w.busy = True
                await_report(w)
                break
            w.channel.close()         # gone: reaped when it has exited
        else:
            ours = theirs = None
            try:
                if listener.reusable:
                    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                pid = os.fork()
            except OSError as e:
                listener.log(DROP + b"unable to fork: " + errors.error_str(e), 1)
                for half in (ours, theirs):
                    if half is not None:
                        half.close()
                children -= 1
                status()
                os.close(fd)
                continue
            if pid == 0:
                # the listener's descriptors; the socket objects are detached
                # so that nothing closes a number the child reuses
                closing = [s.detach(), wake_r, wake_w] + [
                    n for n in (w.channel.detach() for w in workers.values()) if n >= 0]
                if theirs is None:
                    child(listener, fd, remote_address, closing)
                closing.append(ours.detach())
                worker(listener, theirs, fd, remote_address, closing)
            if ours is not None:
                theirs.close()
                w = workers[pid] = Worker(pid, ours)
                await_report(w)
        os.close(fd)


def warm_up(module, env: dict[bytes, bytes]) -> None:
    """The program's warm_up(env), if it has one, in the listener (already
    under -u and -g) before the first fork: code every child would otherwise
    specialize for itself.  The listener keeps its cwd (-x may name a file
    relative to it); one it cannot open means no warm-up."""
    warm = getattr(module, "warm_up", None)
    if warm is None:
        return
    try:
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        warm(env)
    finally:
        os.fchdir(cwd)
        os.close(cwd)


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    """tcpserver(1) for qmail with env the caller's environment; returns 0 after
    SIGTERM, 100/111 on failure."""
    verbosity = 1
    try:
        o = parse_options(argv, env)
        verbosity = o.verbosity
        s = bind(o)
        drop(o)
        module = in_process_module(o.program[0])
        title = None
        if module is not None:
            title = proctitle.Title()
            title.prepare(o.program)
        if o.localhost is None or o.remotehost:
            # DNS is asked in the children: import it once, before the first fork
            from pyqmail import qdns  # noqa: F401
            import dns.rdatatype  # noqa: F401
    except Fatal as e:
        if verbosity:
            errors.write_line(2, e.text)
        return e.code
    if module is not None:
        warm_up(module, env)
    # tcpserver closes 0 and 1; /dev/null keeps the numbers from being reused
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0, inheritable=False)
    os.dup2(devnull, 1, inheritable=False)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    return serve(Listener(o, env, module, title), s)


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
