"""Address helpers shared by qmail-send and qmail-inject: qmail's quoting
(quote.c; spec/inject.md §4.5)."""

SPECIALS = frozenset(b'"(),:;<>@[\\]')


def needs_quotes(local: bytes) -> bool:
    if not local or local.startswith(b".") or local.endswith(b".") or b".." in local:
        return True
    return any(c >= 127 or c <= 32 or c in SPECIALS for c in local)


def quote_local(local: bytes) -> bytes:
    """A local part, wrapped in "..." with \\ escapes when it needs it."""
    if not needs_quotes(local):
        return local
    out = bytearray(b'"')
    for c in local:
        if c in b'"\\\r\n':
            out += b"\\"
        out.append(c)
    out += b'"'
    return bytes(out)


def quote_address(addr: bytes) -> bytes:
    """Quote the part before the last @; keep the rest; empty stays empty."""
    if not addr:
        return addr
    at = addr.rfind(b"@")
    if at < 0:
        return quote_local(addr)
    return quote_local(addr[:at]) + addr[at:]
