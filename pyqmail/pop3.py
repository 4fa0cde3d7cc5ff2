"""qmail-popup's and qmail-pop3d's sides of a POP3 conversation (spec/pop3.md),
without I/O.

    popup = Popup(hostname, pid, now)            # qmail-popup, as root
    send(popup.greet())
    while popup.exit_code is None and popup.login is None:
        send(popup.receive(read(128)))           # b"" = EOF
    ... run the subprogram with popup.pipe_data() on its fd 3 ...
    send(popup.child_done(crashed, code))

    pop3d = Pop3d(messages, mailbox)             # qmail-pop3d, as the user
    send(pop3d.greet())
    while pop3d.exit_code is None:
        for chunk in pop3d.receive_writes(read(1024)):
            send(chunk)

`messages` is the maildir listing (Message objects, oldest first); `mailbox`
opens, unlinks and renames message files (relative to the maildir).  Message
text is read lazily while RETR/TOP output is sent, a bounded piece at a time.
"""

COMMAND_MAX = 65536   # commands.c reads a line into a stralloc until memory runs
                      # out, and then ends the session silently; we stop here
CHUNK = 65536         # bytes of a message read and sent at a time
ULONG = 1 << 64       # scan_ulong() wraps as an unsigned long does

OK = b"+OK \r\n"   # note the trailing space: okay() is "+OK " CR LF

# qmail-popup
ERR_USAGE = b"-ERR usage: popup hostname subprogram\r\n"
ERR_NOMEM = b"-ERR out of memory\r\n"
ERR_PIPE = b"-ERR unable to open pipe\r\n"
ERR_WRITE = b"-ERR unable to write pipe\r\n"
ERR_FORK = b"-ERR unable to fork\r\n"
ERR_CHILDCRASHED = b"-ERR aack, child crashed\r\n"
ERR_BADAUTH = b"-ERR authorization failed\r\n"
ERR_SYNTAX = b"-ERR syntax error\r\n"
ERR_WANTUSER = b"-ERR USER first\r\n"
ERR_AUTHORIZ = b"-ERR authorization first\r\n"

# qmail-pop3d
ERR_NOMAILDIR = b"-ERR this user has no $HOME/Maildir\r\n"
ERR_SCAN = b"-ERR unable to scan $HOME/Maildir\r\n"
ERR_UNIMPL = b"-ERR unimplemented\r\n"
ERR_DELETED = b"-ERR already deleted\r\n"
ERR_NOZERO = b"-ERR messages are counted from 1\r\n"
ERR_TOOBIG = b"-ERR not that many messages\r\n"
ERR_NOSUCH = b"-ERR unable to open that message\r\n"
ERR_NOUNLINK = b"-ERR unable to unlink all deleted messages\r\n"


def scan_ulong(s: bytes) -> tuple[int, int]:
    """qmail's scan_ulong: (value modulo 2^64, number of digits used)."""
    end = 0
    while end < len(s) and 48 <= s[end] <= 57:
        end += 1
    return (int(s[:end]) % ULONG if end else 0), end


class Commands:
    """commands.c: a line ends at LF, one CR before it is dropped, the verb is
    what comes before the first space (any case), the argument what follows
    the spaces after it; a NUL ends the line as it ends qmail's C string."""

    def __init__(self):
        self._line = bytearray()

    def lines(self, data: bytes, pos: int = 0):
        """Yield (verb lowercased, argument, position after the line) for each
        whole line in data[pos:]; keep the rest for the next call; None as the
        verb when a line passes COMMAND_MAX."""
        while pos < len(data):
            end = data.find(b"\n", pos)
            if end < 0:
                self._line += data[pos:]
                if len(self._line) > COMMAND_MAX + 1:
                    yield None, b"", len(data)
                return
            self._line += data[pos:end]
            line = bytes(self._line)
            self._line.clear()
            pos = end + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > COMMAND_MAX:
                yield None, b"", pos
                return
            line = line.split(b"\0", 1)[0]
            verb, _, arg = line.partition(b" ")
            yield verb.lower(), arg.lstrip(b" "), pos


class Popup:
    """qmail-popup's AUTHORIZATION state: USER/PASS or APOP, then the
    subprogram (checkpassword) decides; no I/O."""

    def __init__(self, hostname: bytes, pid: int, now: int):
        self.hostname = hostname
        # unique = "PID.TIME@": with the hostname and brackets, the APOP timestamp
        self.unique = b"%d.%d@" % (pid, now)
        self.exit_code: int | None = None
        self.login: tuple[bytearray, bytearray] | None = None  # (user, password)
        self._commands = Commands()
        self._username: bytes | None = None
        self.verbs = {
            b"user": self.pop3_user,
            b"pass": self.pop3_pass,
            b"apop": self.pop3_apop,
            b"quit": self.pop3_quit,
            b"noop": self.okay,
        }

    def greet(self) -> bytes:
        return b"+OK <%s%s>\r\n" % (self.unique, self.hostname)

    def timestamp(self) -> bytes:
        return b"<%s%s>" % (self.unique, self.hostname)

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the client (b"" = EOF); return the replies.  Once
        `login` is set, the rest of what was read is dropped, as qmail-popup's
        input buffer is when it execs the subprogram."""
        if self.exit_code is not None or self.login is not None:
            return b""
        if not data:
            self.exit_code = 1    # die(): EOF ends the session silently
            return b""
        out = []
        for verb, arg, _ in self._commands.lines(data):
            if verb is None:
                self.exit_code = 1
                break
            out.append(self.verbs.get(verb, self.err_authoriz)(arg))
            if self.exit_code is not None or self.login is not None:
                break
        return b"".join(out)

    def okay(self, arg: bytes) -> bytes:
        return OK

    def err_authoriz(self, arg: bytes) -> bytes:
        return ERR_AUTHORIZ

    def pop3_quit(self, arg: bytes) -> bytes:
        self.exit_code = 1
        return OK

    def pop3_user(self, arg: bytes) -> bytes:
        if not arg:
            return ERR_SYNTAX
        self._username = arg
        return OK

    def pop3_pass(self, arg: bytes) -> bytes:
        if self._username is None:
            return ERR_WANTUSER
        if not arg:
            return ERR_SYNTAX
        self.login = (bytearray(self._username), bytearray(arg))
        return b""

    def pop3_apop(self, arg: bytes) -> bytes:
        # the name ends at the first space; the digest is everything after it
        user, space, digest = arg.partition(b" ")
        if not space:
            return ERR_SYNTAX
        self.login = (bytearray(user), bytearray(digest))
        return b""

    def pipe_data(self) -> bytearray:
        """What the subprogram reads on fd 3: user, password, timestamp, each
        NUL-terminated (spec/pop3.md §2.1)."""
        user, password = self.login
        return user + b"\0" + password + b"\0" + self.timestamp() + b"\0"

    def forget(self, *buffers: bytearray) -> None:
        """Zero the password (qmail's byte_zero) and the given copies of it."""
        for buf in (self.login[1],) + buffers:
            buf[:] = bytes(len(buf))

    def child_done(self, crashed: bool, code: int) -> bytes:
        """The subprogram ended; qmail-popup always exits 1 after it."""
        self.exit_code = 1
        if crashed:
            return ERR_CHILDCRASHED
        if code:
            return ERR_BADAUTH
        return b""


class Message:
    """One message of the listing: its path below the maildir (`new/NAME` or
    `cur/NAME`), its size on disk, its DELE mark."""

    def __init__(self, path: bytes, size: int):
        self.path = path
        self.size = size
        self.deleted = False

    def unique(self) -> bytes:
        """UIDL: the name without `new/`/`cur/`, cut at the first `:`."""
        return self.path[4:].split(b":", 1)[0]


class Blast:
    """blast()'s line loop, fed whole lines in bulk or one line at a time."""

    def __init__(self, limit: int):
        self.limit = limit        # 0: no limit; else 1 + the body lines wanted
        self.inheaders = True
        self.midline = False      # the start of the current line is already sent
        self.done = False
        self.out: list[bytes] = []

    def take(self) -> bytes:
        out = b"".join(self.out)
        self.out.clear()
        return out

    def line(self, text: bytes, complete: bool) -> None:
        """A line (complete: its LF was seen) or the start of one, without LF."""
        if not self.midline:
            if self.limit and not self.inheaders:
                self.limit -= 1
                if not self.limit:
                    self.done = True
                    return
            if complete and not text:
                self.inheaders = False
            elif text[:1] == b".":
                self.out.append(b".")
        self.out.append(text)
        if complete:
            self.out.append(b"\r\n")
        self.midline = not complete

    def whole(self, data: bytes) -> None:
        """LF-ended lines."""
        if self.midline:
            first = data.index(b"\n")
            self.line(data[:first], True)
            data = data[first + 1:]
        if self.limit:
            pos = 0
            while pos < len(data) and not self.done:
                end = data.index(b"\n", pos)
                self.line(data[pos:end], True)
                pos = end + 1
        elif data:
            # no limit: the same rule for all lines at once
            out = data.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
            self.out.append(b"." + out if data[:1] == b"." else out)


class Pop3d:
    """qmail-pop3d's TRANSACTION state over one maildir listing; no I/O."""

    def __init__(self, messages: list[Message], mailbox):
        self.messages = messages
        self.mailbox = mailbox
        self.exit_code: int | None = None
        self.last = 0
        self._commands = Commands()
        self.verbs = {
            b"quit": self.pop3_quit,
            b"stat": self.pop3_stat,
            b"list": self.pop3_list,
            b"uidl": self.pop3_uidl,
            b"dele": self.pop3_dele,
            b"retr": self.pop3_top,
            b"rset": self.pop3_rset,
            b"last": self.pop3_last,
            b"top": self.pop3_top,
            b"noop": self.okay,
        }

    def greet(self) -> bytes:
        return OK

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the client (b"" = EOF); return the reply bytes."""
        return b"".join(self.receive_writes(data))

    def receive_writes(self, data: bytes):
        """Like receive, as a series of bounded writes (messages are read as
        they are sent)."""
        if self.exit_code is not None:
            return
        if not data:
            self.exit_code = 0    # die(): no deletion, no renaming
            return
        for verb, arg, _ in self._commands.lines(data):
            if verb is None:
                self.exit_code = 0
                return
            yield from self.verbs.get(verb, self.err_unimpl)(arg)
            if self.exit_code is not None:
                return

    # ---- commands (qmail-pop3d.c); each yields its output

    def okay(self, arg: bytes):
        yield OK

    def err_unimpl(self, arg: bytes):
        yield ERR_UNIMPL

    def msgno(self, arg: bytes) -> tuple[int | None, bytes]:
        """The 0-based index arg names, or None and the error reply."""
        number, used = scan_ulong(arg)
        if not used:
            return None, ERR_SYNTAX
        if not number:
            return None, ERR_NOZERO
        if number > len(self.messages):
            return None, ERR_TOOBIG
        if self.messages[number - 1].deleted:
            return None, ERR_DELETED
        return number - 1, b""

    def pop3_stat(self, arg: bytes):
        # qmail quirk: the count includes messages marked deleted; the total not
        total = sum(m.size for m in self.messages if not m.deleted) % ULONG
        yield b"+OK %d %d\r\n" % (len(self.messages), total)

    def pop3_rset(self, arg: bytes):
        for m in self.messages:
            m.deleted = False
        self.last = 0
        yield OK

    def pop3_last(self, arg: bytes):
        yield b"+OK %d\r\n" % self.last

    def pop3_dele(self, arg: bytes):
        i, err = self.msgno(arg)
        if i is None:
            yield err
            return
        self.messages[i].deleted = True
        self.last = max(self.last, i + 1)
        yield OK

    def _listing(self, i: int, uidl: bool) -> bytes:
        m = self.messages[i]
        return b"%d %s\r\n" % (i + 1, m.unique() if uidl else b"%d" % m.size)

    def _dolisting(self, arg: bytes, uidl: bool):
        if arg:
            i, err = self.msgno(arg)
            if i is None:
                yield err
                return
            yield b"+OK " + self._listing(i, uidl)
            return
        yield OK
        lines = [self._listing(i, uidl) for i, m in enumerate(self.messages) if not m.deleted]
        yield b"".join(lines) + b".\r\n"

    def pop3_list(self, arg: bytes):
        return self._dolisting(arg, False)

    def pop3_uidl(self, arg: bytes):
        return self._dolisting(arg, True)

    def pop3_top(self, arg: bytes):
        """TOP msg [n] and RETR msg [n]: the header and n body lines, or all."""
        i, err = self.msgno(arg)
        if i is None:
            yield err
            return
        _, used = scan_ulong(arg)
        rest = arg[used:].lstrip(b" ")
        n, used = scan_ulong(rest)
        limit = (n + 1) % ULONG if used else 0
        try:
            f = self.mailbox.open(self.messages[i].path)
        except OSError:
            yield ERR_NOSUCH
            return
        try:
            yield OK
            yield from self._blast(f, limit)
        finally:
            f.close()

    def _blast(self, f, limit: int):
        """blast(): each line with its LF turned into CR LF and a leading `.`
        doubled, then an extra empty line and the `.` line; with a limit (TOP),
        the header and limit - 1 body lines."""
        lines = Blast(limit)
        pending = b""
        while not lines.done:
            try:
                chunk = f.read(CHUNK)
            except OSError:
                self.exit_code = 0   # getln() failed: die()
                return
            if not chunk:
                if pending or lines.midline:
                    # a last line without LF is a line too
                    lines.line(pending, True)
                break
            data = pending + chunk if pending else chunk
            cut = data.rfind(b"\n") + 1
            whole, pending = data[:cut], data[cut:]
            if whole:
                lines.whole(whole)
            if len(pending) > CHUNK and not lines.done:
                # a line too long to hold: send its start now
                lines.line(pending, False)
                pending = b""
            if lines.out:
                yield lines.take()
        lines.out.append(b"\r\n.\r\n")
        yield lines.take()

    def pop3_quit(self, arg: bytes):
        out = []
        for m in self.messages:
            if m.deleted:
                try:
                    self.mailbox.unlink(m.path)
                except OSError:
                    out.append(ERR_NOUNLINK)
            elif m.path.startswith(b"new/"):
                try:
                    self.mailbox.rename(m.path, b"cur/" + m.path[4:] + b":2,")
                except OSError:
                    pass   # if it fails, bummer
        out.append(OK)
        self.exit_code = 0
        yield b"".join(out)
