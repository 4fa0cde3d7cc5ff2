"""How qmail's tools split a message into header fields and body
(headerbody.c, hfield_valid() of hfield.c)."""


def field_valid(h: bytes) -> bool:
    """hfield_valid(): `name:` with a name of bytes 33-126 (SP/TAB before the colon)."""
    colon = h.find(b":")
    if colon < 0:
        return False
    name = h[:colon].rstrip(b" \t")
    if not name:
        return False
    return all(32 < ch < 127 for ch in name)


def split(data: bytes) -> tuple[list[bytes], bytes]:
    """headerbody(): the header fields (continuations joined, each ending in
    LF, one added to an unterminated last line) and the body text it hands on:
    from the empty line, or `\\n` + the first line that is no field (nor a
    `From ` line, which counts as a field, `MBOX-Line: From ...`)."""
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
