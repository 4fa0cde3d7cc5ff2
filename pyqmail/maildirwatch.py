"""maildirwatch: show the new messages of $MAILDIR every 30 seconds
(spec/admin-tools.md §5)."""
import os
import sys
import time

from pyqmail import errors, maildir

FATAL = b"maildirwatch: fatal: "
CLEAR = b"\033[;H\033[;J"


def printable(data: bytes, replacement: bytes) -> bytes:
    return bytes(ch if 32 <= ch <= 126 else replacement[0] for ch in data)


def field_valid(line: bytes) -> bool:
    """hfield_valid(): a `:` after a name of bytes 33..126 (SP/TAB may follow it)."""
    name, colon, _ = line.partition(b":")
    name = name.rstrip(b" \t")
    return bool(colon) and bool(name) and all(33 <= ch <= 126 for ch in name)


def header_fields(data: bytes) -> tuple[list[bytes], bytes]:
    """headerbody(): the header fields (continuations joined, each ending in
    LF, one added to an unterminated last line) and the body text it hands on:
    from the empty line, or `\\n` + the first line that is no field (nor a
    `From ` line, which counts as a field)."""
    fields = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos:] + b"\n" if end < 0 else data[pos:end + 1]
        pos = len(data) if end < 0 else end + 1
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        elif line == b"\n":
            return fields, line + body_lines(data[pos:])
        elif line.startswith(b"From "):
            fields.append(b"MBOX-Line: " + line)
        elif field_valid(line):
            fields.append(line)
        else:
            return fields, b"\n" + line + body_lines(data[pos:])
    return fields, b""


def body_lines(body: bytes) -> bytes:
    """getsa(): an unterminated last line gets its LF."""
    return body + b"\n" if body and not body.endswith(b"\n") else body


def value(field: bytes) -> bytes:
    """hfield_skipname(): the field after its name, colon and SP/TAB/CR/LF."""
    rest = field.split(b":", 1)[1]
    return rest.lstrip(b" \t\r\n")


def name_is(field: bytes, name: bytes) -> bool:
    return field.split(b":", 1)[0].rstrip(b" \t").lower() == name


def screen(messages: list[bytes]) -> bytes:
    out = bytearray(CLEAR)
    for data in messages:
        fields, rest = header_fields(data)
        sender = recipient = b"?"
        from_ = None
        subject = b""
        for field in fields:
            if name_is(field, b"return-path"):
                sender = value(field)[:-1] if value(field) else sender  # final LF dropped
            elif name_is(field, b"delivered-to"):
                recipient = value(field)[:-1] if value(field) else recipient
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
