"""qmail-qread: list the queued messages and their recipients
(spec/admin-tools.md §3)."""
import os
import signal
import sys
import time

from pyqmail import auto, date822, errors

PRINTABLE = bytes(c if 32 <= c <= 126 else 95 for c in range(256))


def safe(data: bytes) -> bytes:
    """Bytes outside 32..126 become `_`."""
    return data.translate(PRINTABLE)


def date(t: float) -> bytes:
    tm = time.gmtime(t)
    return b"%d %s %d %02d:%02d:%02d GMT" % (tm.tm_mday, date822.MONTHS[tm.tm_mon - 1], tm.tm_year,
                                            tm.tm_hour, tm.tm_min, tm.tm_sec)


def records(data: bytes) -> list[bytes]:
    """NUL-terminated records; an unterminated last one is dropped."""
    return data.split(b"\0")[:-1]


def summary(ident: bytes, part: bytes) -> bytes:
    """The summary line of one message; raises OSError for `trouble with`."""
    size = os.stat(b"mess/%s/%s" % (part, ident)).st_size
    with open(b"info/%s/%s" % (part, ident), "rb") as f:
        st = os.fstat(f.fileno())
        info = f.read()
    sender = info[1:].split(b"\0", 1)[0] if info.startswith(b"F") else b""
    line = b"%s  #%s  %d  <%s> " % (date(st.st_mtime), ident, size, sender)
    if os.path.exists(b"bounce/%s" % ident):
        line += b" bouncing"
    return safe(line) + b"\n"


def recipients(ident: bytes, part: bytes, channel: bytes) -> bytes:
    try:
        with open(b"%s/%s/%s" % (channel, part, ident), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return b""
    out = []
    for record in records(data):
        if record.startswith(b"T"):
            out.append(b"\t%s\t%s\n" % (channel, safe(record[1:])))
        elif record.startswith(b"D"):
            out.append(b"  done\t%s\t%s\n" % (channel, safe(record[1:])))
    return b"".join(out)


def trouble(ident: bytes, e: OSError) -> bytes:
    return b"warning: trouble with #%s: %s\n" % (ident, errors.error_str(e))


def run(qmail_home: bytes, split: int, out) -> int:
    try:
        os.chdir(os.path.join(qmail_home, b"queue"))
    except OSError as e:
        out.write(b"fatal: unable to chdir: %s\n" % errors.error_str(e))
        return 111
    for n in range(split):
        part = b"%d" % n
        try:
            names = os.listdir(b"info/" + part)
        except OSError as e:
            out.write(b"fatal: unable to opendir info/%s: %s\n" % (part, errors.error_str(e)))
            return 111
        for name in names:
            if not name.isdigit():
                continue
            # readsubdir gives the number; fmtqfn makes every name from it
            number = int(name)
            ident, part_of = b"%d" % number, b"%d" % (number % split)
            try:
                line = summary(ident, part_of)
            except OSError as e:
                out.write(trouble(ident, e))
                continue
            out.write(line)
            for channel in (b"local", b"remote"):
                try:
                    listing = recipients(ident, part_of, channel)
                except OSError as e:
                    listing = trouble(ident, e)
                out.write(listing)
    out.flush()
    return 0


def main() -> None:
    # qmail-qread | head: die of SIGPIPE as qmail's does, not with a traceback
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(run(auto.QMAIL_HOME, auto.SPLIT, sys.stdout.buffer))
