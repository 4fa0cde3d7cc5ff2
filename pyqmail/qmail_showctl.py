"""qmail-showctl: analyze the qmail configuration files (spec/admin-tools.md §1).

The report goes to fd 1 in one piece at the end, as qmail's buffered output
does; exit 0, or 111 when the control directory or control/me cannot be read.
The values of the header block are this installation's (pyqmail.auto).
"""
import os
import sys

from pyqmail import auto, control, fdio

# (kind, file, default text, PRE, POST; for strings, whether `me` is the default)
STRINGS = {
    b"bouncefrom": (False, b"MAILER-DAEMON", b"Bounce user name is "),
    b"bouncehost": (True, b"bouncehost", b"Bounce host name is "),
    b"defaultdomain": (True, b"defaultdomain", b"Default domain name is "),
    b"defaulthost": (True, b"defaulthost", b"Default host name is "),
    b"doublebouncehost": (True, b"doublebouncehost", b"2B recipient host: "),
    b"doublebounceto": (False, b"postmaster", b"2B recipient user: "),
    b"envnoathost": (True, b"envnoathost", b"Presumed domain name is "),
    b"helohost": (True, b"helohost", b"SMTP client HELO host name is "),
    b"idhost": (True, b"idhost", b"Message-ID host name is "),
    b"localiphost": (True, b"localiphost", b"Local IP address becomes "),
    b"me": (False, b"undefined! Uh-oh", b"My name is "),
    b"plusdomain": (True, b"plusdomain", b"Plus domain name is "),
    b"smtpgreeting": (True, b"smtpgreeting", b"SMTP greeting: 220 "),
}
INTS = {
    b"concurrencylocal": (b"10", b"Local concurrency is ", b""),
    b"concurrencyremote": (b"20", b"Remote concurrency is ", b""),
    b"databytes": (b"0", b"SMTP DATA limit is ", b" bytes"),
    b"queuelifetime": (b"604800", b"Message lifetime in the queue is ", b" seconds"),
    b"timeoutconnect": (b"60", b"SMTP client connection timeout is ", b" seconds"),
    b"timeoutremote": (b"1200", b"SMTP client data timeout is ", b" seconds"),
    b"timeoutsmtpd": (b"1200", b"SMTP server data timeout is ", b" seconds"),
}
RCPTHOSTS = (b"SMTP clients may send messages to recipients at ", b".")
LISTS = {
    b"badmailfrom": (b"Any MAIL FROM is allowed.", b"", b" not accepted in MAIL FROM."),
    b"locals": (b"Messages for me are delivered locally.", b"Messages for ",
                b" are delivered locally."),
    b"percenthack": (b"The percent hack is not allowed.",
                     b"The percent hack is allowed for user%host@", b"."),
    b"qmqpservers": (b"No QMQP servers.", b"QMQP server: ", b"."),
    b"rcpthosts": (b"SMTP clients may send messages to any recipient.",) + RCPTHOSTS,
    b"smtproutes": (b"No artificial SMTP routes.", b"SMTP route: ", b""),
    b"virtualdomains": (b"No virtual domains.", b"Virtual domain: ", b""),
}
ORDER = (b"badmailfrom", b"bouncefrom", b"bouncehost", b"concurrencylocal",
         b"concurrencyremote", b"databytes", b"defaultdomain", b"defaulthost",
         b"doublebouncehost", b"doublebounceto", b"envnoathost", b"helohost", b"idhost",
         b"localiphost", b"locals", b"me", b"percenthack", b"plusdomain", b"qmqpservers",
         b"queuelifetime", b"rcpthosts", b"morercpthosts", b"morercpthosts.cdb",
         b"smtpgreeting", b"smtproutes", b"timeoutconnect", b"timeoutremote",
         b"timeoutsmtpd", b"virtualdomains")
KNOWN = frozenset(ORDER)
TROUBLE = b"Oops! Trouble reading this file.\n"

SAFE_TABLE = bytes(c if 32 <= c <= 126 else 0x3f for c in range(256))


def safe(value: bytes) -> bytes:
    """safeput(): bytes outside 32..126 shown as `?`."""
    return value.translate(SAFE_TABLE)


class Trouble(Exception):
    """A control file exists but cannot be read."""


def read(name: bytes) -> bytes | None:
    """The file's bytes relative to the cwd (control/), NULs and all; None if
    it does not exist."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError:
        raise Trouble() from None
    try:
        chunks = []
        size = 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > control.MAX_SIZE:
                raise Trouble()
            chunks.append(chunk)
    except OSError:
        raise Trouble() from None
    finally:
        os.close(fd)


def entries(data: bytes) -> list[bytes]:
    """control_readfile() as do_lst() prints it: lines without trailing
    whitespace, empty and `#` lines skipped (a NUL first counts as empty), and
    a NUL inside a line splitting it, as qmail's NUL-separated list does."""
    out = []
    for line in control.parse_list(data):
        if line[:1] != b"\0":
            out += line.split(b"\0")
    return out


def do_str(name: bytes, me: bytes | None) -> bytes:
    flagme, default, pre = STRINGS[name]
    out = b"\n" + name + b": "
    try:
        data = read(name)
    except Trouble:
        return out + TROUBLE
    if data is None:
        value = me if flagme and me is not None else default
        return out + b"(Default.) " + pre + safe(value) + b".\n"
    return out + pre + safe(control.parse_line(data)) + b".\n"


def do_int(name: bytes) -> bytes:
    default, pre, post = INTS[name]
    out = b"\n" + name + b": "
    try:
        data = read(name)
    except Trouble:
        return out + TROUBLE
    value = None if data is None else control.scan_ulong(control.parse_line(data))
    if value is None:
        return out + b"(Default.) " + pre + default + post + b".\n"
    # control_readint(): an unsigned long stored in an int; negative shown as 0
    value = max(control.c_int(value), 0)
    return out + pre + b"%d" % value + post + b".\n"


def do_lst(name: bytes, default: bytes, pre: bytes, post: bytes) -> tuple[bytes, int]:
    """The paragraph, and control_readfile()'s result: 0 absent, 1 read, -1 trouble."""
    out = b"\n" + name + b": "
    try:
        data = read(name)
    except Trouble:
        return out + TROUBLE, -1
    if data is None:
        return out + b"(Default.) " + default + b"\n", 0
    lines = [out + b"\n"]
    lines += [pre + safe(entry) + post + b"\n" for entry in entries(data)]
    return b"".join(lines), 1


def morercpthosts_cdb() -> bytes:
    """Decided by stat(2) alone, as qmail does (it never reads the cdb)."""
    out = b"\nmorercpthosts.cdb: "
    try:
        source = os.stat(b"morercpthosts")
    except OSError:
        source = None
    try:
        cdb = os.stat(b"morercpthosts.cdb")
    except OSError:
        cdb = None
    if source is None:
        if cdb is None:
            return out + b"(Default.) No effect.\n"
        return out + b"Oops! morercpthosts.cdb exists but morercpthosts doesn't.\n"
    if cdb is None:
        return out + b"Oops! morercpthosts exists but morercpthosts.cdb doesn't.\n"
    if int(source.st_mtime) > int(cdb.st_mtime):
        return out + b"Oops! morercpthosts.cdb is older than morercpthosts.\n"
    return out + b"Modified recently enough; hopefully up to date.\n"


def header() -> bytes:
    uids = (auto.UID_ALIAS, auto.UID_QMAILD, auto.UID_QMAILL, auto.UID_OWNER,
            auto.UID_QMAILP, auto.UID_QMAILQ, auto.UID_QMAILR, auto.UID_QMAILS)
    return b"".join([
        b"qmail home directory: %s.\n" % auto.QMAIL_HOME,
        b"user-ext delimiter: %s.\n" % auto.BREAK,
        b"paternalism (in decimal): %d.\n" % auto.PATRN,
        b"silent concurrency limit: %d.\n" % auto.SPAWN,
        b"subdirectory split: %d.\n" % auto.SPLIT,
        b"user ids: %s.\n" % b", ".join(b"%d" % u for u in uids),
        b"group ids: %d, %d.\n" % (auto.GID_NOFILES, auto.GID_QMAIL),
    ])


def report(qmail_home: bytes) -> tuple[bytes, int]:
    """The whole report and the exit code."""
    out = [header()]
    try:
        os.chdir(qmail_home)
    except OSError:
        return b"".join(out) + b"Oops! Unable to chdir to %s.\n" % qmail_home, 111
    try:
        os.chdir(b"control")
    except OSError:
        return b"".join(out) + b"Oops! Unable to chdir to control.\n", 111
    try:
        fd = os.open(b".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return b"".join(out) + b"Oops! Unable to open current directory.\n", 111
    try:
        try:
            data = read(b"me")
        except Trouble:
            return b"".join(out) + b"Oops! Trouble reading control/me.", 111
        me = None if data is None else control.parse_line(data)
        rcpthosts = 0
        for name in ORDER:
            if name in STRINGS:
                out.append(do_str(name, me))
            elif name in INTS:
                out.append(do_int(name))
            elif name == b"morercpthosts":
                if rcpthosts:
                    paragraph, _ = do_lst(name, b"No effect.", *RCPTHOSTS)
                else:
                    paragraph, _ = do_lst(
                        name, b"No rcpthosts; morercpthosts is irrelevant.",
                        b"No rcpthosts; doesn't matter that morercpthosts has ", b".")
                out.append(paragraph)
            elif name == b"morercpthosts.cdb":
                out.append(morercpthosts_cdb())
            else:
                paragraph, result = do_lst(name, *LISTS[name])
                out.append(paragraph)
                if name == b"rcpthosts":
                    rcpthosts = result
        try:
            names = os.listdir(fd)
        except OSError:
            names = []
        for name in names:
            if os.fsencode(name) not in KNOWN:
                out.append(b"\n%s: I have no idea what this file does.\n" % os.fsencode(name))
    finally:
        os.close(fd)
    return b"".join(out), 0


def run(qmail_home: bytes = auto.QMAIL_HOME, outfd: int = 1) -> int:
    text, code = report(qmail_home)
    try:
        fdio.write_all(outfd, text)
    except OSError:
        pass   # qmail ignores a failed flush too: the exit code is the report's
    return code


def main() -> None:
    sys.exit(run())
