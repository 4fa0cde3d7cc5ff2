"""qmail's quote.c: an address's local part in RFC 821/822 quoting, as little
as possible (spec/inject.md §4.5)."""

# quote.c's ok[]: bytes that may stand unquoted in a local part.
_OK = frozenset(b"!#$%&'*+-/0123456789=?ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`abcdefghijklmnopqrstuvwxyz{|}~.")


def quote_need(box: bytes) -> bool:
    """True when box must be quoted: empty, a byte outside ok[], or a dot at
    either end or doubled."""
    if not box:
        return True
    if any(ch not in _OK for ch in box):
        return True
    return box[:1] == b"." or box[-1:] == b"." or b".." in box


def quote(box: bytes) -> bytes:
    """box, or `"box"` with CR, LF, `"` and `\\` backslashed when it needs it."""
    if not quote_need(box):
        return box
    out = bytearray(b'"')
    for ch in box:
        if ch in b'\r\n"\\':
            out += b"\\"
        out.append(ch)
    out += b'"'
    return bytes(out)


def quote2(address: bytes) -> bytes:
    """quote2(): the part before the last `@` quoted, the rest verbatim; the
    empty address stays empty."""
    if not address:
        return address
    at = address.rfind(b"@")
    if at < 0:
        return quote(address)
    return quote(address[:at]) + address[at:]
