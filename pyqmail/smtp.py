"""qmail-smtpd's side of one SMTP conversation (spec/smtpd.md), without I/O.

    session = Session(config, new_queue, now)
    send(session.greet())
    while session.exit_code is None:
        for chunk in session.receive_writes(read(1024)):   # b"" = EOF
            send(chunk)

`receive_writes` returns the writes qmail-smtpd makes (its 512-byte output
buffer, flushed after the "flush" verbs, when full, and before every read:
spec/smtpd.md §4); `receive` joins them.  Queueing goes through `new_queue()`,
an object with qmail.Qmail's interface; `now()` gives the time in seconds.

Replies are qmail 1.03's; from netqmail 1.06 come QMAILQUEUE (in qmail.py), the
hop-counter fix and 0.0.0.0 counting as a local address for localiphost.
"""

from pyqmail import date822, errors

MAXHOPS = 100
COMMAND_MAX = 65536     # spec/smtpd.md §4 pyqmail note: a command line longer than
                        # this (CR LF not counted) is treated as qmail treats
                        # exhausted memory
OUTSIZE = 512           # qmail-smtpd's ssoutbuf
BIGWRITE = 8192         # substdio's SUBSTDIO_OUTSIZE, for pieces above OUTSIZE
ADDRESS_MAX = 899       # addrparse(): addr.len (with its NUL) must not pass 900

DIE_ALARM = b"451 timeout (#4.4.2)\r\n"
DIE_NOMEM = b"421 out of memory (#4.3.0)\r\n"
DIE_CONTROL = b"421 unable to read controls (#4.3.0)\r\n"
DIE_IPME = b"421 unable to figure out my IP addresses (#4.3.0)\r\n"
STRAYNEWLINE = b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"
DIE_BUG = b"421 internal error in pyqmail, please report it (#4.3.0)\r\n"

ERR_BMF = b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n"
ERR_NOGATEWAY = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
ERR_UNIMPL = b"502 unimplemented (#5.5.1)\r\n"
ERR_SYNTAX = b"555 syntax error (#5.5.4)\r\n"
ERR_WANTMAIL = b"503 MAIL first (#5.5.1)\r\n"
ERR_WANTRCPT = b"503 RCPT first (#5.5.1)\r\n"
ERR_NOOP = b"250 ok\r\n"
ERR_VRFY = b"252 send some mail, i'll try my best\r\n"
ERR_QQT = b"451 qqt failure (#4.3.0)\r\n"
HELP = b"214 qmail home page: http://pobox.com/~djb/qmail.html\r\n"
OK = b"250 ok\r\n"
FLUSHED = b"250 flushed\r\n"
GO_AHEAD = b"354 go ahead\r\n"
TOO_MANY_HOPS = b"554 too many hops, this message is looping (#5.4.6)\r\n"
TOO_BIG = b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"

# received.c issafe(): every other byte of a Received field is written as `?`
SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@%+/=:-")
SAFE_TABLE = bytes(c if c in SAFE else 0x3f for c in range(256))

CR, LF, DOT = 13, 10, 46


class ControlsUnreadable(Exception):
    """A control file (morercpthosts.cdb) could not be read during the session."""


class Config:
    """What qmail-smtpd's setup() reads: control files and the environment."""

    def __init__(self, greeting: bytes, *, liphost: bytes | None = None,
                 local_ips: frozenset = frozenset(), rcpthosts: list[bytes] | None = None,
                 morercpthosts=None, badmailfrom: list[bytes] | None = None,
                 databytes: int = 0, remoteip: bytes = b"unknown",
                 remotehost: bytes = b"unknown", remoteinfo: bytes | None = None,
                 local: bytes = b"unknown", relayclient: bytes | None = None):
        self.greeting = greeting
        self.liphost = liphost
        self.local_ips = local_ips                    # 4-tuples of ints
        # constmap compares case-insensitively: keep the entries lowercased
        self.rcpthosts = None if rcpthosts is None else frozenset(h.lower() for h in rcpthosts)
        self.morercpthosts = morercpthosts            # key -> bool; may raise ControlsUnreadable
        self.badmailfrom = None if badmailfrom is None else frozenset(a.lower() for a in badmailfrom)
        self.databytes = databytes
        self.remoteip = remoteip
        self.remotehost = remotehost
        self.remoteinfo = remoteinfo
        self.local = local
        self.relayclient = relayclient


def scan_ulong(s: bytes, pos: int) -> tuple[int, int]:
    """qmail's scan_ulong at pos: (value, digits used)."""
    end = pos
    while end < len(s) and 48 <= s[end] <= 57:
        end += 1
    return (int(s[pos:end]) if end > pos else 0), end - pos


def scan_bracket_ip(s: bytes) -> tuple[int, int, int, int] | None:
    """ip_scanbracket(): `[d.d.d.d]` filling all of s, each part kept mod 256 as
    qmail stores it in an unsigned char; None otherwise."""
    if s[:1] != b"[":
        return None
    parts = []
    pos = 1
    for n in range(4):
        if n:
            if s[pos:pos + 1] != b".":
                return None
            pos += 1
        value, used = scan_ulong(s, pos)
        if not used:
            return None
        parts.append(value & 0xFF)
        pos += used
    if s[pos:] != b"]":
        return None
    return tuple(parts)


def unquote(arg: bytes, terminator: int) -> bytes:
    """addrparse()'s copy loop: `\\` escapes, `"` toggles quoting, stop at an
    unquoted terminator."""
    if 0x5c not in arg and 0x22 not in arg:
        end = arg.find(bytes((terminator,)))
        return arg if end < 0 else arg[:end]
    out = bytearray()
    escaped = quoted = False
    for ch in arg:
        if escaped:
            out.append(ch)
            escaped = False
        elif not quoted and ch == terminator:
            break
        elif ch == 0x5c:
            escaped = True
        elif ch == 0x22:
            quoted = not quoted
        else:
            out.append(ch)
    return bytes(out)


def parse_address(arg: bytes, liphost: bytes | None, local_ips) -> bytes | None:
    """addrparse() (spec/smtpd.md §6): the address, or None for a syntax error."""
    start = arg.find(b"<")
    if start >= 0:
        arg = arg[start + 1:]
        terminator = 0x3e
    else:  # partner should go read rfc 821
        terminator = 0x20
        colon = arg.find(b":")
        arg = arg[colon + 1:].lstrip(b" ") if colon >= 0 else b""
    if arg[:1] == b"@":  # source route
        colon = arg.find(b":")
        arg = arg[colon + 1:] if colon >= 0 else b""
    addr = unquote(arg, terminator)
    if liphost is not None:
        at = addr.rfind(b"@")
        if at >= 0 and addr[at + 1:at + 2] == b"[":
            if scan_bracket_ip(addr[at + 1:]) in local_ips:
                addr = addr[:at + 1] + liphost
    if len(addr) > ADDRESS_MAX:
        return None
    return addr


def safe(field: bytes) -> bytes:
    return field.translate(SAFE_TABLE)




def received(config: Config, helo: bytes | None, when: float) -> bytes:
    """received.c: the line qmail-smtpd puts above the message (spec/smtpd.md §10)."""
    out = [b"Received: from ", safe(config.remotehost)]
    if helo is not None:
        out += [b" (HELO ", safe(helo), b")"]
    out.append(b" (")
    if config.remoteinfo is not None:
        out += [safe(config.remoteinfo), b"@"]
    out += [safe(config.remoteip), b")\n  by ", safe(config.local),
            b" with SMTP; ", date822.date822fmt(when), b"\n"]
    return b"".join(out)


class Session:
    """qmail-smtpd's side of one SMTP conversation; no I/O."""

    def __init__(self, config: Config, new_queue, now):
        self.config = config
        self.new_queue = new_queue
        self.now = now
        self.exit_code: int | None = None
        self._buf = bytearray()        # ssout
        self._writes: list[bytes] = []
        self._line = bytearray()       # the command line being read
        self._seenmail = False
        self._flagbarf = False
        self._mailfrom = b""
        self._rcptto: list[bytes] = []
        self._helo: bytes | None = None
        self._dohelo(config.remotehost)
        self._queue = None             # the qmail-queue being fed, in DATA
        self.verbs = {
            b"rcpt": (self.smtp_rcpt, False),
            b"mail": (self.smtp_mail, False),
            b"data": (self.smtp_data, True),
            b"quit": (self.smtp_quit, True),
            b"helo": (self.smtp_helo, True),
            b"ehlo": (self.smtp_ehlo, True),
            b"rset": (self.smtp_rset, False),
            b"help": (self.smtp_help, True),
            b"noop": (self.err_noop, True),
            b"vrfy": (self.err_vrfy, True),
        }

    # ---- output: substdio semantics, so writes fall where qmail's fall

    def out(self, piece: bytes) -> None:
        if len(piece) > OUTSIZE - len(self._buf):
            self.flush()
            if len(piece) > OUTSIZE:
                view = memoryview(piece)
                n = BIGWRITE
                while len(view) > OUTSIZE:
                    n = min(n, len(view))
                    self._writes.append(bytes(view[:n]))
                    view = view[n:]
                piece = bytes(view)
        self._buf += piece

    def flush(self) -> None:
        if self._buf:
            self._writes.append(bytes(self._buf))
            self._buf.clear()

    def _take_writes(self) -> list[bytes]:
        self.flush()
        writes, self._writes = self._writes, []
        return writes

    def _die(self, reply: bytes) -> None:
        """A fatal reply: send it, drop any message being queued, exit 1."""
        self.out(reply)
        self.flush()
        self._abort_queue()
        self.exit_code = 1

    def _abort_queue(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            queue.fail()
            queue.close()

    # ---- the program's entry points

    def greet(self) -> bytes:
        self.out(b"220 ")
        self.out(self.config.greeting)
        self.out(b" ESMTP\r\n")
        return b"".join(self._take_writes())

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the client (b"" = EOF); return the reply bytes to send."""
        return b"".join(self.receive_writes(data))

    def receive_writes(self, data: bytes) -> list[bytes]:
        """Like receive, as the separate writes qmail-smtpd makes."""
        if self.exit_code is not None:
            return []
        if not data:
            # die_read(): EOF or a read error ends the session silently
            self._abort_queue()
            self.exit_code = 1
            return self._take_writes()
        try:
            pos = 0
            while pos < len(data) and self.exit_code is None:
                if self._queue is not None:
                    pos = self._blast(data, pos)
                else:
                    pos = self._command(data, pos)
        except ControlsUnreadable:
            self._die(DIE_CONTROL)
        except MemoryError:
            self._die(DIE_NOMEM)
        return self._take_writes()

    def timeout(self) -> bytes:
        """The client said nothing for timeoutsmtpd seconds: die_alarm()."""
        self._die(DIE_ALARM)
        return b"".join(self._take_writes())

    def abort(self) -> None:
        """A write to the client failed: exit 1 silently, queueing nothing."""
        self._writes.clear()
        self._buf.clear()
        self._abort_queue()
        self.exit_code = 1

    def bug(self) -> bytes:
        """An unexpected failure in pyqmail: a temporary reply and exit 1."""
        self._writes.clear()
        self._buf.clear()
        self._die(DIE_BUG)
        return b"".join(self._take_writes())

    # ---- commands (commands.c)

    def _command(self, data: bytes, pos: int) -> int:
        end = data.find(b"\n", pos)
        if end < 0:
            self._line += data[pos:]
            if len(self._line) > COMMAND_MAX + 1:  # + the CR that may come
                self._die(DIE_NOMEM)
            return len(data)
        self._line += data[pos:end]
        line = bytes(self._line)
        self._line.clear()
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > COMMAND_MAX:
            self._die(DIE_NOMEM)
            return end + 1
        line = line.split(b"\0", 1)[0]  # a NUL ends the C string
        verb, _, arg = line.partition(b" ")
        arg = arg.lstrip(b" ")
        function, flush = self.verbs.get(verb.lower(), (self.err_unimpl, True))
        function(arg)
        if flush:
            self.flush()
        return end + 1

    def _dohelo(self, arg: bytes) -> None:
        self._helo = arg if self.config.remotehost.lower() != arg.lower() else None

    def smtp_helo(self, arg: bytes) -> None:
        self.out(b"250 ")
        self.out(self.config.greeting)
        self.out(b"\r\n")
        self._seenmail = False
        self._dohelo(arg)

    def smtp_ehlo(self, arg: bytes) -> None:
        self.out(b"250-")
        self.out(self.config.greeting)
        self.out(b"\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        self._seenmail = False
        self._dohelo(arg)

    def smtp_rset(self, arg: bytes) -> None:
        self._seenmail = False
        self.out(FLUSHED)

    def smtp_help(self, arg: bytes) -> None:
        self.out(HELP)

    def smtp_quit(self, arg: bytes) -> None:
        self.out(b"221 ")
        self.out(self.config.greeting)
        self.out(b"\r\n")
        self.flush()
        self.exit_code = 0

    def err_noop(self, arg: bytes) -> None:
        self.out(ERR_NOOP)

    def err_vrfy(self, arg: bytes) -> None:
        self.out(ERR_VRFY)

    def err_unimpl(self, arg: bytes) -> None:
        self.out(ERR_UNIMPL)

    def _parse(self, arg: bytes) -> bytes | None:
        return parse_address(arg, self.config.liphost, self.config.local_ips)

    def _bmfcheck(self, addr: bytes) -> bool:
        bmf = self.config.badmailfrom
        if not bmf:
            return False
        if addr.lower() in bmf:
            return True
        at = addr.rfind(b"@")
        return at >= 0 and addr[at:].lower() in bmf

    def _addrallowed(self, addr: bytes) -> bool:
        """rcpthosts(): the domain or a `.suffix` of it is listed (spec/smtpd.md §7)."""
        rh = self.config.rcpthosts
        if rh is None:
            return True
        at = addr.rfind(b"@")
        if at < 0:
            return True  # presumably envnoathost is acceptable
        host = addr[at + 1:].lower()
        keys = [host[j:] for j in range(len(host)) if j == 0 or host[j] == DOT]
        if any(key in rh for key in keys):
            return True
        more = self.config.morercpthosts
        return more is not None and any(more(key) for key in keys)

    def smtp_mail(self, arg: bytes) -> None:
        addr = self._parse(arg)
        if addr is None:
            self.out(ERR_SYNTAX)
            return
        self._flagbarf = self._bmfcheck(addr)
        self._seenmail = True
        self._rcptto = []
        self._mailfrom = addr
        self.out(OK)

    def smtp_rcpt(self, arg: bytes) -> None:
        if not self._seenmail:
            self.out(ERR_WANTMAIL)
            return
        addr = self._parse(arg)
        if addr is None:
            self.out(ERR_SYNTAX)
            return
        if self._flagbarf:
            self.out(ERR_BMF)
            return
        if self.config.relayclient is not None:
            addr += self.config.relayclient
        elif not self._addrallowed(addr):
            self.out(ERR_NOGATEWAY)
            return
        self._rcptto.append(addr)
        self.out(OK)

    # ---- DATA (smtp_data, blast)

    def smtp_data(self, arg: bytes) -> None:
        if not self._seenmail:
            self.out(ERR_WANTMAIL)
            return
        if not self._rcptto:
            self.out(ERR_WANTRCPT)
            return
        self._seenmail = False
        queue = self.new_queue()
        try:
            queue.open()
        except (errors.Failure, OSError):
            self.out(ERR_QQT)
            return
        self._queue = queue
        self.out(GO_AHEAD)
        queue.put(received(self.config, self._helo, self.now()))
        databytes = self.config.databytes
        self._bytestooverflow = databytes + 1 if databytes else 0
        self._state = 1
        self._hops = 0
        self._inheader = True
        self._prefix = bytearray()    # the first 9 raw bytes of the current line

    def _put(self, piece: bytes) -> None:
        """put(): count bytes against databytes; the (N+1)-th fails the message."""
        if self._bytestooverflow:
            if len(piece) >= self._bytestooverflow:
                self._queue.put(piece[:self._bytestooverflow - 1])
                self._bytestooverflow = 0
                self._queue.fail()
                return
            self._bytestooverflow -= len(piece)
        self._queue.put(piece)

    def _count_hops(self, raw: bytes) -> None:
        """blast()'s header scan: lines beginning `received` or `delivered` (any
        case) are hops; a line beginning CR LF ends the header (spec §9.4)."""
        pos = 0
        while self._inheader and pos < len(raw):
            lf = raw.find(b"\n", pos)
            end = len(raw) if lf < 0 else lf + 1
            prefix = self._prefix
            old = len(prefix)
            if old < 9:
                prefix += raw[pos:min(end, pos + 9 - old)]
                new = len(prefix)
                if old < 2 <= new and prefix[:2] == b"\r\n":
                    self._inheader = False
                    return
                if old < 8 <= new and prefix[:8].lower() == b"received":
                    self._hops += 1
                if old < 9 <= new and prefix[:9].lower() == b"delivered":
                    self._hops += 1
            if lf >= 0:
                prefix.clear()
            pos = end

    def _blast(self, data: bytes, start: int) -> int:
        """Decode message bytes from start (spec/smtpd.md §9.3); return where the
        command stream resumes."""
        state = self._state
        pieces = []
        pos = start
        size = len(data)
        cr = lf = -2
        ended = straynewline = False
        while pos < size:
            if state == 0:
                # inside a line: everything up to the next CR or LF is message
                if cr < pos and cr != -1:
                    cr = data.find(b"\r", pos)
                if lf < pos and lf != -1:
                    lf = data.find(b"\n", pos)
                stop = min(x for x in (cr, lf, size) if x >= 0)
                if stop > pos:
                    pieces.append(data[pos:stop])
                if stop == size:
                    pos = size
                    break
                if stop == lf:
                    straynewline = True
                    break
                state = 4
                pos = stop + 1
                continue
            ch = data[pos]
            pos += 1
            if state == 1:                       # at the start of a line
                if ch == LF:
                    straynewline = True
                    break
                if ch == DOT:
                    state = 2
                elif ch == CR:
                    state = 4
                else:
                    pieces.append(data[pos - 1:pos])
                    state = 0
            elif state == 2:                     # line-start "."
                if ch == LF:
                    straynewline = True
                    break
                if ch == CR:
                    state = 3
                else:
                    pieces.append(data[pos - 1:pos])
                    state = 0
            elif state == 3:                     # line-start "." CR
                if ch == LF:
                    ended = True
                    break
                pieces.append(b".\r")
                if ch == CR:
                    state = 4
                else:
                    pieces.append(data[pos - 1:pos])
                    state = 0
            else:                                # state 4: CR held
                if ch == LF:
                    pieces.append(b"\n")
                    state = 1
                elif ch == CR:
                    pieces.append(b"\r")
                else:
                    pieces.append(b"\r")
                    pieces.append(data[pos - 1:pos])
                    state = 0
        self._state = state
        if straynewline:
            # spec/smtpd.md §9.3: a LF not preceded by CR ends the session;
            # qmail will not guess where the client meant the line to end.
            self._die(STRAYNEWLINE)
            return pos
        if self._inheader:
            self._count_hops(data[start:pos])
        if pieces:
            self._put(b"".join(pieces))
        if ended:
            self._finish()
        return pos

    def _finish(self) -> None:
        """The message ended: envelope, qmail-queue's verdict, the reply."""
        queue, self._queue = self._queue, None
        hops = self._hops >= MAXHOPS
        if hops:
            queue.fail()
        queue.from_(self._mailfrom)
        for rcpt in self._rcptto:
            queue.to(rcpt)
        qqx = queue.close()
        if not qqx:  # acceptmessage(), piece by piece as qmail writes it
            for piece in (b"250 ok ", b"%d" % int(self.now()), b" qp ", b"%d" % queue.qp, b"\r\n"):
                self.out(piece)
        elif hops:
            self.out(TOO_MANY_HOPS)
        elif self.config.databytes and not self._bytestooverflow:
            self.out(TOO_BIG)
        else:
            self.out(b"554 " if qqx[:1] == b"D" else b"451 ")
            self.out(qqx[1:])
            self.out(b"\r\n")
