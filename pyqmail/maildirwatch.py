"""maildirwatch: show the new messages of $MAILDIR every 30 seconds
(spec/admin-tools.md §5)."""
import os
import sys
import time

from pyqmail import errors, headerbody, maildir

FATAL = b"maildirwatch: fatal: "
CLEAR = b"\033[;H\033[;J"


def printable(data: bytes, replacement: bytes) -> bytes:
    return bytes(ch if 32 <= ch <= 126 else replacement[0] for ch in data)


def value(field: bytes) -> bytes:
    """hfield_skipname(): the field after its name, colon and SP/TAB/CR/LF."""
    rest = field.split(b":", 1)[1]
    return rest.lstrip(b" \t\r\n")


def name_is(field: bytes, name: bytes) -> bool:
    return field.split(b":", 1)[0].rstrip(b" \t").lower() == name


def screen(messages: list[bytes]) -> bytes:
    out = bytearray(CLEAR)
    for data in messages:
        fields, rest = headerbody.split(data)
        sender = recipient = b"?"
        from_ = None
        subject = b""
        for field in fields:
            if name_is(field, b"return-path"):
                sender = value(field)[:-1] or sender  # final LF dropped; empty keeps `?`
            elif name_is(field, b"delivered-to"):
                recipient = value(field)[:-1] or recipient
            elif name_is(field, b"from"):
                from_ = field[:-1]
            elif name_is(field, b"subject"):
                subject += value(field)
        out += b"FROM " + printable(sender, b"?") + b" TO <" + printable(recipient, b"?") + b">\n"
        if from_ is not None:
            out += b"\033[1m" + printable(from_, b"/") + b"\033[0m\n"
        out += printable((subject + rest)[:158], b"/") + b"\n\n"
    return bytes(out)


def run(env: dict[bytes, bytes], rounds: int | None = None) -> int:
    directory = env.get(b"MAILDIR")
    if directory is None:
        errors.write_line(2, FATAL + b"MAILDIR not set")
        return 111
    try:
        os.chdir(directory)
    except OSError as e:
        errors.write_line(2, FATAL + b"unable to chdir to %s: %s" % (directory, errors.error_str(e)))
        return 111
    while rounds is None or rounds > 0:
        maildir.clean_tmp()
        try:
            found = maildir.scan((b"new",))
        except maildir.ScanError as e:
            errors.write_line(2, FATAL + e.text)
            return 111
        messages = []
        for _, path in found:
            try:
                with open(path, "rb") as f:
                    messages.append(f.read())
            except OSError:
                continue
        try:
            data = memoryview(screen(messages))
            while data:
                data = data[os.write(1, data):]
        except OSError:
            return 111
        if rounds is not None:
            rounds -= 1
            if not rounds:
                break
        time.sleep(30)
    return 0


def main() -> None:
    sys.exit(run(dict(os.environb)))
