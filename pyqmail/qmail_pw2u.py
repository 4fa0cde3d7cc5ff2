"""qmail-pw2u: turn passwd lines (fd 0) into users/assign lines (fd 1)
(spec/local.md §4.3)."""
import errno
import os
import sys

from pyqmail import auto, control, errors, sgetopt

FATAL = b"qmail-pw2u: fatal: "


class Fatal(Exception):
    def __init__(self, text: bytes):
        super().__init__(text)
        self.text = text


def read_list(name: bytes, colon: bool = False) -> dict[bytes, bytes] | None:
    """A users/ list file as constmap: lowercased key -> value after its first
    `:` (mailnames; entries without `:` are not in the map) or the whole entry;
    None when missing.  constmap finds the last of repeated keys."""
    try:
        data = control.read_bytes(name)
    except control.ControlError:
        raise Fatal(b"unable to read controls") from None
    if data is None:
        return None
    out = {}
    for entry in control.parse_list(data):
        if colon:
            key, found, value = entry.partition(b":")
            if not found:
                continue
        else:
            key, value = entry, b""
        out[key.lower()] = value
    return out


def read_file(name: bytes) -> bytes | None:
    try:
        with open(name, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError:
        raise Fatal(b"unable to read controls") from None


def lines_of(data: bytes) -> list[bytes]:
    """getln loop: every line with its LF; a final unterminated piece too."""
    out = data.split(b"\n")
    last = out.pop()
    out = [line + b"\n" for line in out]
    out.append(last)
    return out


def fields(line: bytes, count: int) -> list[bytes] | None:
    """The first `count` colon-terminated fields, or None when fewer exist."""
    parts = line.split(b":", count)
    return parts[:count] if len(parts) > count else None


def convert(passwd: bytes, options: dict) -> bytes:
    out = bytearray()
    brk = options["break"]
    dashcolon = options["dashcolon"]
    include = read_list(b"users/include")
    exclude = read_list(b"users/exclude")
    mailnames_map = read_list(b"users/mailnames", colon=True)
    allusers = {}
    flagalias = False
    for line in lines_of(passwd):
        if b"\0" in line:
            continue
        f = fields(line, 6)
        if f is None:
            continue
        user, _, uidstr, gidstr, _, home = f
        uid = control.scan_ulong(uidstr) or 0
        if uid == 0:
            continue
        if options["noupper"] and any(65 <= ch <= 90 for ch in user):
            continue
        if include is not None and user.lower() not in include:
            continue
        if exclude is not None and user.lower() in exclude:
            continue
        if options["home"]:
            try:
                st = os.stat(home)
            except OSError as e:
                if e.errno != errno.ENOENT or options["home"] == 1:
                    raise Fatal(b"unable to stat " + home) from None
                continue
            except ValueError:
                continue
            if st.st_uid != uid:
                continue
        uugh = b":%s:%s:%s:%s:" % (user, uidstr, gidstr, home)
        allusers[user.lower()] = uugh  # constmap: a later account of that name wins
        if user == auto.USER_ALIAS:
            out += b"+" + uugh + dashcolon + b":\n"
            flagalias = True
        names = None
        if mailnames_map is not None:
            names = mailnames_map.get(user.lower())
        if names is None:
            names = user  # `joe:` in users/mailnames gives joe no mail names at all
        for name in names.split(b":"):
            if not name:
                continue
            out += b"=" + name + uugh + b"::\n"
            if brk:
                out += b"+" + name + brk + uugh + dashcolon + b":\n"
    if not flagalias:
        raise Fatal(b"unable to find %s user" % auto.USER_ALIAS)
    subusers = read_file(b"users/subusers")
    if subusers is not None:
        for line in lines_of(subusers):
            sub, colon, rest = line.partition(b":")
            if not colon:
                continue
            owner, colon, rest = rest.partition(b":")
            if not colon:
                continue
            uugh = allusers.get(owner.lower())
            if uugh is None:
                raise Fatal(b"unable to find %s user for subuser" % owner)
            pre, colon, rest = rest.partition(b":")
            if not colon:
                continue
            out += b"=" + sub + uugh + dashcolon + pre + b":\n"
            if brk:
                out += b"+" + sub + brk + uugh + dashcolon + pre + b"-:\n"
    append = read_file(b"users/append")
    if append is not None:
        out += append
    out += b".\n"
    return bytes(out)


def run(argv: list[bytes], qmail_home: bytes) -> int:
    opts, _, problem = sgetopt.getopt(argv, b"/ohHuUc:C")
    if problem is not None:
        errors.write_line(2, problem)
        return 100
    options = {"dashcolon": b"-:", "home": 2, "noupper": True, "break": auto.BREAK}
    for opt, value in opts:
        if opt == b"/":
            options["dashcolon"] = b"-/:"
        elif opt == b"o":
            options["home"] = 2
        elif opt == b"h":
            options["home"] = 1
        elif opt == b"H":
            options["home"] = 0
        elif opt == b"u":
            options["noupper"] = False
        elif opt == b"U":
            options["noupper"] = True
        elif opt == b"c":
            options["break"] = value[:1]
        elif opt == b"C":
            options["break"] = b""
    try:
        try:
            os.chdir(qmail_home)
        except OSError:
            raise Fatal(b"unable to chdir") from None
        try:
            passwd = sys.stdin.buffer.read()
        except OSError:
            raise Fatal(b"unable to read input") from None
        output = convert(passwd, options)
        try:
            view = memoryview(output)
            while view:
                view = view[os.write(1, view):]
        except OSError:
            raise Fatal(b"unable to write output") from None
    except Fatal as e:
        errors.write_line(2, FATAL + e.text)
        return 111
    return 0


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], auto.QMAIL_HOME))
