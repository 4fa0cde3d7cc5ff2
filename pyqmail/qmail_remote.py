"""qmail-remote: send one message to one host by SMTP (spec/remote.md §3-§10).

    qmail-remote HOST SENDER RECIP [RECIP ...]

fd 0 is the message; fd 1 gets one report per recipient (`r`, `h`TEXT, `s`TEXT)
and then one for the message (`K`/`Z`/`D`TEXT), each ended by NUL; exit 0.

Beyond qmail 1.03, without changing that output (INSTALL, "Remote delivery"):
IPv6 (AAAA records, `[IPv6:...]` literals, queue/lock/tcpto6), EHLO with
PIPELINING and SIZE when the server offers them (HELO when EHLO is refused),
no CNAME rewriting of recipients (as notqmail 1.09), DNS answers of any size.
"""
import errno
import os
import signal
import socket
import sys

from pyqmail import auto, errors, ipme, qdns, tcpto
from pyqmail.control import Control, ControlError, c_int
from pyqmail.errors import Permanent, Temporary

PORT_SMTP = 25
HUGESMTPTEXT = 5000
BATCH = 100   # RCPT commands per pipelined group (bounds what either side buffers)

ERR_USAGE = b"I (qmail-remote) was invoked improperly. (#5.3.5)\n"
ERR_CHDIR = b"Unable to switch to home directory. (#4.3.0)\n"
ERR_CONTROL = b"Unable to read control files. (#4.3.0)\n"
ERR_OSERR = b"System resources temporarily unavailable. (#4.3.0)\n"
ERR_NOCONN = b"Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n"
ERR_READ = b"Unable to read message. (#4.3.0)\n"
ERR_DNS = b"Sorry, I couldn't find any host by that name. (#4.1.2)\n"
ERR_PARTIALLINE = b"SMTP cannot transfer messages with partial final lines. (#5.6.2)\n"
ERR_NOMX = b"Sorry, I couldn't find a mail exchanger or IP address. (#5.4.4)\n"
ERR_AMBIGMX = (b"Sorry. Although I'm listed as a best-preference MX or A for that host,\n"
               b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n")

# quote.c: the bytes a local part may hold unquoted
ATOM = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                 b"!#$%&'*+-./=?^_`{|}~")


class WriteFailed(Exception):
    """fd 1 is gone: qmail-remote exits 0 at once."""


class Output:
    """qmail-remote's fd 1."""

    def __init__(self, fd: int):
        self.fd = fd

    def put(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            raise WriteFailed() from None


def perm_dns(host: bytes) -> Permanent:
    safe = bytes(c if 33 <= c <= 126 else 63 for c in host)
    return Permanent(b"Sorry, I couldn't find any host named %s. (#5.1.2)\n" % safe)


def quote_need(box: bytes) -> bool:
    """quote.c quote_need()."""
    if not box:
        return True
    if any(c not in ATOM for c in box):
        return True
    return box.startswith(b".") or box.endswith(b".") or b".." in box


def addrmangle(address: bytes) -> bytes:
    """The address as sent in MAIL/RCPT: the local part quoted when needed."""
    box, at, domain = address.rpartition(b"@")
    if not at:
        return address
    if quote_need(box):
        box = b'"' + b"".join(b"\\" + bytes([c]) if c in b'\r\n"\\' else bytes([c])
                              for c in box) + b'"'
    return box + b"@" + domain


class Controls:
    """The control files qmail-remote reads (§4)."""

    def __init__(self, qmail_home: bytes):
        try:
            control = Control(qmail_home)
            control.me   # control_init()
            self.timeout = c_int(control.int(b"timeoutremote", 1200))
            self.timeoutconnect = c_int(control.int(b"timeoutconnect", 60))
            self.helohost = control.line(b"helohost", None, use_me=True)
            routes = control.list(b"smtproutes")
        except ControlError:
            raise Temporary(ERR_CONTROL) from None
        if self.helohost is None:
            raise Temporary(ERR_CONTROL)
        self.routes: dict[bytes, bytes] = {}
        for line in routes or []:
            key, colon, value = line.partition(b":")
            if colon:
                self.routes[key.lower()] = value   # a later line wins


def find_route(routes: dict[bytes, bytes], host: bytes) -> tuple[bytes, int] | None:
    """smtproutes (§5): (RELAY, PORT) for HOST, or None for MX delivery."""
    relay = None
    for i in range(len(host) + 1):
        if i == 0 or i == len(host) or host[i] == 46:
            relay = routes.get(host[i:].lower())
            if relay is not None:
                break
    if not relay:
        return None
    port = PORT_SMTP
    end = relay.find(b"]") + 1
    if relay.startswith(b"[") and end and relay[end:end + 1] in (b"", b":"):
        # pyqmail: `[IPv6:...]` holds colons; the port follows the bracket
        relay, rest = relay[:end], relay[end:]
        if rest:
            port = scan_port(rest[1:])
        return relay, port
    relay, colon, rest = relay.partition(b":")
    if colon:
        port = scan_port(rest)
    return relay, port


def scan_port(text: bytes) -> int:
    """scan_ulong() of the port, as an unsigned short."""
    end = 0
    while end < len(text) and 48 <= text[end] <= 57:
        end += 1
    return int(text[:end] or b"0") % 65536


class Reply:
    """qmail-remote's smtpcode() on bytes; no I/O.

    `feed(data)` returns how many bytes it used; once `done`, `code` is the
    first line's code as C computes it (unchecked digits, unsigned wrap) and
    `text` the reply without CRs, kept below HUGESMTPTEXT bytes."""

    def __init__(self):
        self.code = 0
        self.text = bytearray()
        self.done = False
        self._state = 0   # 0-2 code digits, 3 next byte c, 4 through LF then 3 bytes,
        self._skip = 0    # 5 skip 3 bytes, 6 through the final LF

    def feed(self, data: bytes) -> int:
        used = 0
        while used < len(data) and not self.done:
            state = self._state
            if state in (4, 6):
                end = data.find(b"\n", used)
                stop = len(data) if end < 0 else end + 1
                self._keep_each(data[used:stop])
                used = stop
                if end >= 0:
                    if state == 4:
                        self._state, self._skip = 5, 3
                    else:
                        self.done = True
                continue
            ch = data[used]
            used += 1
            self._keep_each(bytes((ch,)))
            if state < 3:
                self.code = (self.code * 10 + (ch - 48)) % (1 << 64)
                self._state += 1
            elif state == 5:
                self._skip -= 1
                if not self._skip:
                    self._state = 3
            elif ch == 45:        # '-': a continuation line
                self._state = 4
            elif ch == 10:
                self.done = True
            else:
                self._state = 6
        return used

    def _keep_each(self, data: bytes) -> None:
        # get(): every byte but CR, while the text is below the limit
        room = HUGESMTPTEXT - len(self.text)
        if room > 0:
            self.text += data.replace(b"\r", b"")[:room]


class Smtp:
    """One SMTP conversation with the partner at ip (§10)."""

    def __init__(self, sock: socket.socket, ip: bytes, timeout: int):
        self.sock = sock
        self.ip = ip
        self.timeout = timeout
        self.buf = b""
        self.critical = False
        self.text = b""
        if timeout >= 0:
            sock.settimeout(timeout)

    def dropped(self) -> Temporary:
        return Temporary(b"Connected to %s but connection died. %s(#4.4.2)\n"
                         % (self.ip, b"Possible duplicate! " if self.critical else b""))

    def send(self, data: bytes) -> None:
        """timeoutwrite() of every byte; the connection died on failure."""
        if self.timeout < 0:
            raise self.dropped()   # select() refuses a negative wait: EINVAL
        view = memoryview(data)
        try:
            while view:
                view = view[self.sock.send(view):]
        except OSError:
            raise self.dropped() from None

    def reply(self) -> int:
        """smtpcode(): read one reply; self.text holds its text."""
        parser = Reply()
        while True:
            if self.buf:
                used = parser.feed(self.buf)
                self.buf = self.buf[used:]
                if parser.done:
                    self.text = bytes(parser.text)
                    return parser.code
            if self.timeout < 0:
                raise self.dropped()   # select() refuses a negative wait: EINVAL
            try:
                self.buf = self.sock.recv(128)
            except OSError:
                raise self.dropped() from None
            if not self.buf:
                raise self.dropped()

    def said(self) -> bytes:
        """outsmtptext(): the last reply as `Remote host said: ` + text."""
        text, self.text = self.text, b""
        if not text:
            return b""
        return b"Remote host said: " + text.replace(b"\0", b"?")

    def quit(self, prepend: bytes, append: bytes) -> bytes:
        """quit(): QUIT without waiting; the report text (letter first)."""
        self.send(b"QUIT\r\n")
        return prepend + self.ip + append + b".\n" + self.said()


def quit_failure(text: bytes) -> Temporary | Permanent:
    if text.startswith(b"D"):
        return Permanent(text[1:])
    return Temporary(text[1:])


def message_size(msg_fd: int) -> int | None:
    """SIZE= estimate: the bytes as sent (each LF becomes CR LF); None if the
    message cannot be read twice."""
    try:
        start = os.lseek(msg_fd, 0, os.SEEK_CUR)
        size = 0
        while True:
            chunk = os.read(msg_fd, 65536)
            if not chunk:
                break
            size += len(chunk) + chunk.count(b"\n")
        os.lseek(msg_fd, start, os.SEEK_SET)
    except OSError:
        return None
    return size


def blast(smtp: Smtp, msg_fd: int) -> None:
    """Send the body: leading `.` doubled, LF sent as CR LF, then `.` CR LF."""
    at_start = True
    last = b"\n"
    while True:
        try:
            chunk = os.read(msg_fd, 65536)
        except OSError:
            raise Temporary(ERR_READ) from None
        if not chunk:
            break
        last = chunk[-1:]
        out = chunk.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
        if at_start and chunk.startswith(b"."):
            out = b"." + out
        at_start = last == b"\n"
        smtp.send(out)
    if last != b"\n":
        raise Permanent(ERR_PARTIALLINE)
    smtp.critical = True
    smtp.send(b".\r\n")


def extensions(text: bytes) -> set[bytes]:
    """The EHLO keywords of a 250 reply's text (its first line is the greeting)."""
    out = set()
    for line in text.split(b"\n")[1:]:
        words = line[4:].split()
        if words:
            out.add(words[0].upper())
    return out


def smtp_dialogue(smtp: Smtp, helohost: bytes, sender: bytes, recips: list[bytes],
                  msg_fd: int, out: Output) -> bytes:
    """§10.2 (with EHLO, PIPELINING, SIZE): the `K` text, or a failure raised."""
    if smtp.reply() != 220:
        raise quit_failure(smtp.quit(b"ZConnected to ", b" but greeting failed"))
    smtp.send(b"EHLO " + helohost + b"\r\n")
    if smtp.reply() == 250:
        offered = extensions(smtp.text)
    else:
        offered = set()
        smtp.send(b"HELO " + helohost + b"\r\n")
        if smtp.reply() != 250:
            raise quit_failure(smtp.quit(b"ZConnected to ", b" but my name was rejected"))
    mail = b"MAIL FROM:<" + sender + b">"
    if b"SIZE" in offered:
        size = message_size(msg_fd)
        if size is not None:
            mail += b" SIZE=%d" % size
    mail += b"\r\n"
    flagbother = False
    data_code = None
    if b"PIPELINING" in offered:
        # RFC 2920: MAIL, the RCPTs and DATA go in groups; replies keep their order
        for n in range(0, len(recips), BATCH):
            batch = recips[n:n + BATCH]
            last = n + BATCH >= len(recips)
            smtp.send((mail if n == 0 else b"")
                      + b"".join(b"RCPT TO:<" + r + b">\r\n" for r in batch)
                      + (b"DATA\r\n" if last else b""))
            if n == 0:
                check_mail(smtp)
            for _ in batch:
                flagbother = rcpt_result(smtp, out) or flagbother
            if last:
                data_code = smtp.reply()
    else:
        smtp.send(mail)
        check_mail(smtp)
        for r in recips:
            smtp.send(b"RCPT TO:<" + r + b">\r\n")
            flagbother = rcpt_result(smtp, out) or flagbother
    if not flagbother:
        if data_code is not None:
            smtp.text = b""
            if data_code < 400:   # RFC 2920: a DATA accepted anyway must be ended
                smtp.send(b".\r\n")
        raise quit_failure(smtp.quit(b"DGiving up on ", b""))
    if data_code is None:
        smtp.send(b"DATA\r\n")
        data_code = smtp.reply()
    if data_code >= 500:
        raise quit_failure(smtp.quit(b"D", b" failed on DATA command"))
    if data_code >= 400:
        raise quit_failure(smtp.quit(b"Z", b" failed on DATA command"))
    blast(smtp, msg_fd)
    code = smtp.reply()
    smtp.critical = False
    if code >= 500:
        raise quit_failure(smtp.quit(b"D", b" failed after I sent the message"))
    if code >= 400:
        raise quit_failure(smtp.quit(b"Z", b" failed after I sent the message"))
    return smtp.quit(b"K", b" accepted message")[1:]


def rcpt_result(smtp: Smtp, out: Output) -> bool:
    """One RCPT reply as `h`/`s`/`r`; true if the recipient was accepted."""
    code = smtp.reply()
    if code >= 500:
        out.put(b"h" + smtp.ip + b" does not like recipient.\n" + smtp.said() + b"\0")
    elif code >= 400:
        out.put(b"s" + smtp.ip + b" does not like recipient.\n" + smtp.said() + b"\0")
    else:
        out.put(b"r\0")
        return True
    return False


def check_mail(smtp: Smtp) -> None:
    code = smtp.reply()
    if code >= 500:
        raise quit_failure(smtp.quit(b"DConnected to ", b" but sender was rejected"))
    if code >= 400:
        raise quit_failure(smtp.quit(b"ZConnected to ", b" but sender was rejected"))


def connect(family: int, ip: bytes, port: int, timeout: int) -> tuple[socket.socket | None, bool]:
    """timeoutconn(): a connected socket, or None and whether the wait expired."""
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as e:
        if family == socket.AF_INET6 and e.errno == errno.EAFNOSUPPORT:
            return None, False   # no IPv6 here: as if unreachable
        raise Temporary(ERR_OSERR) from None
    address = socket.inet_ntop(family, ip)
    if timeout < 0:
        # connect() in progress, then select() fails with EINVAL: no timeout
        sock.setblocking(False)
        try:
            sock.connect((address, port))
        except OSError:
            sock.close()
            return None, False
        sock.setblocking(True)
        return sock, False
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
    except (TimeoutError, BlockingIOError):
        # our wait expired, or the kernel's (ETIMEDOUT is qmail's error_timeout)
        sock.close()
        return None, True
    except OSError:
        sock.close()
        return None, False
    return sock, False


def local_addresses() -> set[tuple[int, bytes]]:
    """ipme (§8): this host's interface addresses, plus 0.0.0.0 and :: [net]."""
    try:
        me = {(socket.AF_INET, socket.inet_aton(ip)) for ip in ipme.ipv4()}
        me |= {(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip)) for ip in ipme.ipv6()}
    except OSError:
        raise Temporary(ERR_OSERR) from None
    me.add((socket.AF_INET, b"\0" * 4))
    me.add((socket.AF_INET6, b"\0" * 16))
    return me


def remote(argv: list[bytes], env: dict[bytes, bytes], msg_fd: int, out: Output) -> bytes:
    """§3.2: deliver; the `K` text, or Temporary/Permanent."""
    if len(argv) < 4:
        raise Permanent(ERR_USAGE)
    try:
        os.chdir(auto.QMAIL_HOME)
    except OSError:
        raise Temporary(ERR_CHDIR) from None
    controls = Controls(b".")
    host = argv[1]
    port = PORT_SMTP
    route = find_route(controls.routes, host)
    if route is not None:
        host, port = route
    sender = addrmangle(argv[2])
    me = local_addresses()
    recips = [addrmangle(r) for r in argv[3:]]

    resolver = qdns.Resolver(env)
    try:
        if route is not None:
            entries = qdns.dns_ip(resolver, host)
        else:
            entries, soft = qdns.dns_mxip(resolver, host, qdns.seed())
            if soft and not entries:
                raise qdns.Soft()
    except qdns.Soft:
        raise Temporary(ERR_DNS) from None
    except qdns.Hard:
        raise perm_dns(host) from None
    if not entries:
        raise Permanent(ERR_NOMX)

    prefme = 100000
    for pref, family, ip in entries:
        if (family, ip) in me and pref < prefme:
            prefme = pref
    if route is not None:
        prefme = 300000
    entries = [e for e in entries if e[0] < prefme]
    if not entries:
        raise Permanent(ERR_AMBIGMX)

    tables = {}
    for pref, family, ip in entries:
        table = tables.setdefault(family, tcpto.Table(tcpto.layout(family)))
        if table.down(ip):
            continue
        sock, timed_out = connect(family, ip, port, controls.timeoutconnect)
        if sock is None:
            table.err(ip, timed_out)
            continue
        table.err(ip, False)
        with sock:
            smtp = Smtp(sock, qdns.ip_fmt(family, ip), controls.timeout)
            return smtp_dialogue(smtp, controls.helohost, sender, recips, msg_fd, out)
    raise Temporary(ERR_NOCONN)


def run(argv: list[bytes], env: dict[bytes, bytes], msg_fd: int, out_fd: int) -> int:
    """qmail-remote: deliver as spec/remote.md says; always exit 0."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    out = Output(out_fd)
    try:
        try:
            out.put(b"K" + remote(argv, env, msg_fd, out) + b"\0")
        except Temporary as e:
            out.put(b"Z" + e.text + b"\0")
        except Permanent as e:
            out.put(b"D" + e.text + b"\0")
        except MemoryError:
            out.put(b"ZOut of memory. (#4.3.0)\n\0")
        except Exception:
            out.put(b"Z" + errors.BUG_TEXT + b"\n\0")
    except WriteFailed:
        pass
    return 0


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], dict(os.environb), 0, 1))
