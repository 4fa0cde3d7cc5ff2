"""qmail-inject: preprocess and send a mail message (spec/inject.md §1-5).

Reads the message on fd 0, rewrites its header (addresses, Date, Message-ID,
From, ...), and queues it through qmail-queue (pyqmail.qmail, so QMAILQUEUE
works), or with -n prints it on fd 1.  Exec'd once per message by MUAs and by
sendmail, so it imports only os, sys, time and small pyqmail modules.
"""
import os
import sys
import time

from pyqmail import auto, control, date822, environ
from pyqmail.headerbody import field_valid
from pyqmail.sgetopt import Getopt
from pyqmail.token822 import (ATOM, AT, COLON, COMMENT, DOT, LEFT, LITERAL, QUOTE,
                              RIGHT, addrlist, parse, quote2, quote_need,
                              unparse, unquote)

FATAL = b"qmail-inject: fatal: "
LINELEN = 80
CHUNK = 65536

NOMEM = b"out of memory\n"
READ_ERROR = b"read error\n"
NO_QQ = b"unable to run qmail-queue\n"
NO_CHDIR = b"internal bug\n"


# hfield.c's names (compared case-insensitively; `-` must match exactly)
KNOWN = frozenset((
    b"sender", b"from", b"reply-to", b"to", b"cc", b"bcc", b"date", b"message-id",
    b"subject", b"resent-sender", b"resent-from", b"resent-reply-to", b"resent-to",
    b"resent-cc", b"resent-bcc", b"resent-date", b"resent-message-id",
    b"return-receipt-to", b"errors-to", b"apparently-to", b"received", b"return-path",
    b"delivered-to", b"content-length", b"content-type", b"content-transfer-encoding",
    b"notice-requested-upon-delivery-to", b"mail-followup-to",
))
TO_CC = frozenset((b"to", b"cc"))
HEADER_RECIPIENTS = frozenset((b"bcc", b"apparently-to"))
RESENT_RECIPIENTS = frozenset((b"resent-to", b"resent-cc", b"resent-bcc"))
SENDERS = frozenset((b"sender", b"from", b"reply-to", b"return-receipt-to", b"errors-to",
                     b"resent-sender", b"resent-from", b"resent-reply-to"))
DROPPED = frozenset((b"bcc", b"resent-bcc", b"return-path", b"content-length"))
RESENT = (b"resent-sender", b"resent-from", b"resent-reply-to", b"resent-to",
          b"resent-cc", b"resent-bcc", b"resent-date", b"resent-message-id")


class Fatal(Exception):
    """qmail-inject's death: `qmail-inject: fatal: TEXT` (TEXT carries its own
    line end, if any) and an exit code."""

    def __init__(self, text: bytes, code: int):
        super().__init__(text)
        self.text = text
        self.code = code


def parse_failure(line: bytes) -> Fatal:
    return Fatal(b"unable to parse this line:\n" + line, 100)


def field_name(h: bytes) -> bytes | None:
    """hfield_known(): the lower-cased name of a field qmail knows, else None."""
    colon = h.find(b":")
    if colon < 0:
        return None
    name = h[:colon].rstrip(b" \t").lower()
    return name if name in KNOWN else None


def msgid(idhost: bytes, when: int, pid: int) -> bytes:
    t = time.gmtime(when)
    return b"<%d%02d%02d%02d%02d%02d.%d.qmail@%s>" % (
        t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, pid, idhost)


class Input:
    """fd 0 read by lines (getln), then streamed; a missing final LF is supplied."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""
        self.pos = 0  # lines are taken from buf[pos:] without copying the rest
        self.done = False

    def read(self) -> bytes:
        try:
            return os.read(self.fd, CHUNK)
        except OSError:
            raise Fatal(READ_ERROR, 111) from None

    def line(self) -> bytes | None:
        """The next line with its LF, or None at EOF (headerbody's getsa)."""
        if self.done:
            return None
        i = self.buf.find(b"\n", self.pos)
        if i >= 0:
            line, self.pos = self.buf[self.pos:i + 1], i + 1
            return line
        # a line longer than what is buffered: collect pieces, join once
        parts = [self.buf[self.pos:]]
        self.buf, self.pos = b"", 0
        while True:
            chunk = self.read()
            if not chunk:
                self.done = True
                line = b"".join(parts)
                return line + b"\n" if line else None
            i = chunk.find(b"\n")
            if i >= 0:
                parts.append(chunk[:i + 1])
                self.buf, self.pos = chunk, i + 1
                return b"".join(parts)
            parts.append(chunk)

    def chunks(self):
        """The rest of the input, in pieces, ending in LF if it is not empty."""
        if self.done:
            return
        last = b""
        if self.pos < len(self.buf):
            yield self.buf[self.pos:]
            last = self.buf[-1:]
        self.buf, self.pos = b"", 0
        while True:
            chunk = self.read()
            if not chunk:
                break
            last = chunk[-1:]
            yield chunk
        self.done = True
        if last and last != b"\n":
            yield b"\n"


class Output:
    """The message's destination: qmail-queue, or fd 1 with -n; buffered."""

    def __init__(self, qq):
        self.qq = qq
        self.buf = bytearray()

    def put(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        data = bytes(self.buf)
        self.buf.clear()
        if self.qq is not None:
            self.qq.put(data)
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
        except OSError:
            pass  # qmail ignores errors writing -n output; the exit code is 0


class Inject:
    """One run of qmail-inject: its options, controls and the lists it builds."""

    def __init__(self, env: dict[bytes, bytes], qmail_home: bytes, starttime: int, pid: int):
        self.env = env
        self.qmail_home = qmail_home
        self.starttime = starttime
        self.pid = pid
        opts = env.get(b"QMAILINJECT", b"")
        self.namecomment = b"c" in opts
        self.deletesender = b"s" in opts
        self.deletefrom = b"f" in opts
        self.deletemessid = b"i" in opts
        self.hackrecip = b"r" in opts
        self.hackmess = b"m" in opts
        self.mailhost = env.get(b"QMAILHOST", env.get(b"MAILHOST"))
        self.mailrhost = env.get(b"QMAILSHOST", self.mailhost)
        self.mailuser = b"anonymous"
        for name in (b"QMAILUSER", b"MAILUSER", b"USER", b"LOGNAME"):
            if name in env:
                self.mailuser = env[name]
                break
        self.mailruser = env.get(b"QMAILSUSER", self.mailuser)
        self.sender: bytes | None = None
        self.seen: set[bytes] = set()
        self.saved: list[bytes] = []
        self.hrlist: list[bytes] = []
        self.tocclist: list[bytes] = []
        self.hrrlist: list[bytes] = []
        self.reciplist: list[bytes] = []
        self.mft: frozenset[bytes] | None = None
        self.resent = False
        self.out: Output | None = None
        self.qq = None
        self.queue = True     # -N (default) / -n
        self.flagrh = True    # header recipients are used

    # controls (getcontrols)

    def getcontrols(self) -> None:
        self.mft_init()
        try:
            os.chdir(self.qmail_home)
        except OSError:
            raise Fatal(NO_CHDIR, 111) from None
        env = self.env
        ctl = control.Control(self.qmail_home)
        try:
            ctl.me
            domain = ctl.line(b"defaultdomain", b"defaultdomain", True)
            domain = env.get(b"QMAILDEFAULTDOMAIN", domain)
            self.defaultdomain = self.control_tokens(b"." + domain)
            host = ctl.line(b"defaulthost", b"defaulthost", True)
            host = env.get(b"QMAILDEFAULTHOST", host)
            self.defaulthost = self.control_tokens(b"@" + host)
            plus = ctl.line(b"plusdomain", b"plusdomain", True)
            plus = env.get(b"QMAILPLUSDOMAIN", plus)
            self.plusdomain = self.control_tokens(b"." + plus)
            self.idhost = env.get(b"QMAILIDHOST", ctl.line(b"idhost", b"idhost", True))
        except control.ControlError:
            raise Fatal(READ_ERROR, 111) from None

    @staticmethod
    def control_tokens(s: bytes) -> list:
        tokens = parse(s)
        if tokens is None:
            raise parse_failure(s)
        tokens.reverse()  # kept reversed, ready to prepend to a reversed address
        return tokens

    def mft_init(self) -> None:
        """QMAILMFTFILE, read before the chdir: the list addresses, if the file exists."""
        name = self.env.get(b"QMAILMFTFILE")
        if name is None:
            return
        try:
            data = control.read_bytes(name)
        except control.ControlError:
            raise Fatal(READ_ERROR, 111) from None
        if data is not None:
            self.mft = frozenset(a.lower() for a in control.parse_list(data))

    # address rewriting (spec/inject.md §4), on reversed token lists

    def rwgeneric(self, addr: list) -> None:
        if not addr:
            return  # don't rewrite <>
        if len(addr) >= 2 and addr[1][0] == AT and addr[0][0] == LITERAL and not addr[0][1]:
            return  # don't rewrite <foo@[]>
        if addr[-1][0] == AT:  # source route
            while addr:
                if addr.pop()[0] == COLON:
                    break
        if not addr:
            return  # <@foo:> -> <>
        if addr[0][0] == DOT:
            del addr[0]
        if not addr:
            return
        if addr[0][0] == AT:
            del addr[0]
        if not addr:
            return
        if not any(t[0] == AT for t in addr):
            addr[0:0] = self.defaulthost
        if addr[0][0] == ATOM and addr[0][1].endswith(b"+"):
            addr[0] = (ATOM, addr[0][1][:-1])
            addr[0:0] = self.plusdomain
        for kind in (DOT, LITERAL):
            for t in addr:
                if t[0] == kind:
                    return
                if t[0] == AT:
                    break
        addr[0:0] = self.defaultdomain

    @staticmethod
    def unquoted(addr: list) -> bytes:
        return unquote(addr[::-1])

    def rwreturn(self, addr: list) -> None:
        self.rwgeneric(addr)
        if self.sender is None:
            self.sender = self.unquoted(addr) + (b"-@[]" if self.hackrecip else b"")

    def rwhrr(self, addr: list) -> None:
        self.rwgeneric(addr)
        self.hrrlist.append(self.unquoted(addr))

    def rwhr(self, addr: list) -> None:
        self.rwgeneric(addr)
        self.hrlist.append(self.unquoted(addr))

    def rwtocc(self, addr: list) -> None:
        self.rwgeneric(addr)
        a = self.unquoted(addr)
        self.hrlist.append(a)
        self.tocclist.append(a)

    def rewrite(self, field: bytes, rw) -> bytes:
        """Tokenize a field, rewrite its addresses, regenerate it."""
        tokens = parse(field)
        if tokens is None:
            raise parse_failure(field)
        tokens = addrlist(tokens, rw)
        if tokens is None:
            raise parse_failure(field)
        return unparse(tokens, LINELEN)

    # arguments

    def set_sender(self, arg: bytes) -> None:
        """-f: the envelope sender, rewritten like any address."""
        prepared = quote2(arg)
        tokens = parse(prepared)
        if tokens is None:
            raise parse_failure(prepared)
        tokens.reverse()
        self.rwgeneric(tokens)
        self.sender = self.unquoted(tokens)

    def dorecip(self, arg: bytes) -> None:
        tokens = parse(quote2(arg))
        if tokens is None:
            raise Fatal(b"unable to parse address: %s\n" % arg, 100)
        tokens.reverse()
        self.rwgeneric(tokens)
        self.reciplist.append(self.unquoted(tokens))

    # the header (headerbody's callbacks)

    def doheaderfield(self, h: bytes) -> None:
        name = field_name(h)
        if name == b"from" and self.deletefrom:
            return
        if name == b"message-id" and self.deletemessid:
            return
        if name == b"return-path" and self.deletesender:
            return
        if name is not None:
            self.seen.add(name)
        elif not field_valid(h):
            raise Fatal(b"invalid header field: " + h, 100)
        rw = None
        if name in TO_CC:
            rw = self.rwtocc
        elif name in HEADER_RECIPIENTS:
            rw = self.rwhr
        elif name in RESENT_RECIPIENTS:
            rw = self.rwhrr
        elif name == b"return-path":
            rw = self.rwreturn
        elif name in SENDERS:
            rw = self.rwgeneric
        if rw is not None:
            h = self.rewrite(h, rw)
        if name in DROPPED:
            return
        self.saved.append(h)

    def defaultfrom(self) -> bytes:
        """defaultfrommake(): `From: "Name" <user@host>` (or the `c` style), rewritten."""
        env = self.env
        fullname = env.get(b"QMAILNAME", env.get(b"MAILNAME", env.get(b"NAME")))
        df = [(ATOM, b"From"), (COLON, b"")]
        if fullname is not None and not self.namecomment:
            df += [(QUOTE, fullname), (LEFT, b"")]
        df.append((QUOTE if quote_need(self.mailuser) else ATOM, self.mailuser))
        if self.mailhost is not None:
            df += [(AT, b""), (ATOM, self.mailhost)]
        if fullname is not None:
            df.append((COMMENT, fullname) if self.namecomment else (RIGHT, b""))
        return self.rewrite(unparse(df, LINELEN), self.rwgeneric)

    def defaultreturnpath(self) -> None:
        """dodefaultreturnpath(): the default envelope sender (spec/inject.md §2)."""
        user = self.mailruser
        if self.hackmess:
            user += b"-%d.%d" % (self.starttime, self.pid)
        if self.hackrecip:
            user += b"-"
        drp = [(ATOM, b"Return-Path"), (COLON, b""), (QUOTE, user)]
        if self.mailrhost is not None:
            drp += [(AT, b""), (ATOM, self.mailrhost)]
        self.rewrite(unparse(drp, LINELEN), self.rwreturn)

    def finishheader(self) -> None:
        seen = self.seen
        self.resent = any(name in seen for name in RESENT)
        if self.sender is None:
            self.defaultreturnpath()
        if self.sender is None:
            self.sender = b""  # a default sender with no address at all
        added = []
        if self.resent:
            if b"resent-date" not in seen:
                added.append(b"Resent-Date: %s\n" % date822.date822fmt(self.starttime))
            if b"resent-message-id" not in seen:
                added.append(b"Resent-Message-ID: %s\n"
                             % msgid(self.idhost, self.starttime, self.pid))
            if b"resent-from" not in seen:
                added.append(b"Resent-" + self.defaultfrom())
            if b"resent-to" not in seen and b"resent-cc" not in seen:
                added.append(b"Resent-Cc: recipient list not shown: ;\n")
        else:
            if b"date" not in seen:
                added.append(b"Date: %s\n" % date822.date822fmt(self.starttime))
            if b"message-id" not in seen:
                added.append(b"Message-ID: %s\n" % msgid(self.idhost, self.starttime, self.pid))
            if b"from" not in seen:
                added.append(self.defaultfrom())
            if b"to" not in seen and b"cc" not in seen:
                added.append(b"Cc: recipient list not shown: ;\n")
            added.append(self.followupto())
        self.open()
        out = self.out
        if self.qq is None:
            out.put(b"Return-Path: <%s>\n" % quote2(self.sender))
        for field in added:
            out.put(field)
        for field in self.saved:
            out.put(field)
        self.saved = []

    def followupto(self) -> bytes:
        """finishmft(): Mail-Followup-To when To/Cc names a list of QMAILMFTFILE."""
        if self.mft is None or b"mail-followup-to" in self.seen:
            return b""
        if not any(a.lower() in self.mft for a in self.tocclist):
            return b""
        return b"Mail-Followup-To: %s\n" % b",\n  ".join(
            quote2(a) for a in reversed(self.tocclist))

    def open(self) -> None:
        """Start qmail-queue (or, with -n, prepare fd 1) once the header is known."""
        if self.out is not None:
            return
        if self.queue:
            from pyqmail import errors, qmail
            self.qq = qmail.Qmail(self.qmail_home, self.env)
            try:
                self.qq.open()
            except errors.Failure:
                raise Fatal(NO_QQ, 111) from None
            except OSError:
                raise Fatal(NO_QQ, 111) from None
        self.out = Output(self.qq)

    def headerbody(self, inp: Input) -> None:
        """headerbody(): fields up to the first empty line or non-field, then the body."""
        parts: list[bytes] | None = None
        while True:
            nextline = inp.line()
            if nextline is None:
                if parts is not None:
                    self.doheaderfield(b"".join(parts))
                self.finishheader()
                return  # no body, no blank line
            if parts is not None:
                if nextline[:1] in (b" ", b"\t"):
                    parts.append(nextline)
                    continue
                self.doheaderfield(b"".join(parts))
            if nextline == b"\n":
                self.finishheader()
                self.out.put(nextline)
                break
            if nextline.startswith(b"From "):
                parts = [b"MBOX-Line: ", nextline]
            elif field_valid(nextline):
                parts = [nextline]
            else:
                self.finishheader()
                self.out.put(b"\n")
                self.out.put(nextline)
                break
        for chunk in inp.chunks():
            self.out.put(chunk)

    def finish(self) -> int:
        """exitnicely(): hand over the envelope, wait for qmail-queue."""
        self.out.flush()
        qq = self.qq
        if qq is None:
            return 0
        qq.from_(self.sender)
        for recipient in self.reciplist:
            qq.to(recipient)
        if self.flagrh:
            for recipient in (self.hrrlist if self.resent else self.hrlist):
                qq.to(recipient)
        result = qq.close()
        if not result:
            return 0
        raise Fatal(result[1:] + b"\n", 100 if result[:1] == b"D" else 111)


def inject(argv: list[bytes], env: dict[bytes, bytes], qmail_home: bytes) -> int:
    job = Inject(env, qmail_home, int(time.time()), os.getpid())
    job.getcontrols()
    strategy = b"A"
    opts = Getopt(argv, b"aAhHnNf:")
    while (opt := opts.next()) is not None:
        if opt in (b"a", b"A", b"h", b"H"):
            strategy = opt
        elif opt == b"n":
            job.queue = False
        elif opt == b"N":
            job.queue = True
        elif opt == b"f":
            job.set_sender(opts.optarg)
        else:
            return 100
    args = argv[opts.optind:]
    if strategy == b"A":
        strategy = b"a" if args else b"h"
    if strategy != b"h":
        for arg in args:
            job.dorecip(arg)
    job.flagrh = strategy != b"a"
    job.headerbody(Input(0))
    return job.finish()


def run(argv: list[bytes], env: dict[bytes, bytes], qmail_home: bytes) -> int:
    """Inject one message as qmail-inject(8) does; return the exit code."""
    try:
        return inject(argv, env, qmail_home)
    except Fatal as e:
        text, code = e.text, e.code
    except MemoryError:
        text, code = NOMEM, 111
    except Exception:
        text, code = b"internal error in pyqmail, please report it (#4.3.0)\n", 111
    try:
        os.write(2, FATAL + text)
    except OSError:
        pass
    return code


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original(), auto.QMAIL_HOME))
