"""RFC 822 tokens as qmail-inject handles them (token822.c, quote.c;
spec/inject.md §4.5-4.6): tokenize a header field, walk its address list right
to left with a rewriting callback, and regenerate the field folded at commas.

A token is a tuple (type, bytes).  Address lists handed to the callback are in
*reverse* reading order, as qmail keeps them: index 0 is the address's last token.
"""

ATOM, QUOTE, LITERAL, COMMENT, LEFT, RIGHT, AT, COMMA, SEMI, COLON, DOT = range(1, 12)

SPECIALS = {ord("."): DOT, ord(","): COMMA, ord("@"): AT, ord("<"): LEFT,
            ord(">"): RIGHT, ord(":"): COLON, ord(";"): SEMI}
SPECIAL_TEXT = {DOT: b".", COMMA: b",", AT: b"@", LEFT: b"<", RIGHT: b">",
                COLON: b":", SEMI: b";"}
WORDS = (ATOM, QUOTE, LITERAL, COMMENT)
SPACE = frozenset(b" \t\r\n")
NOT_ATOM = frozenset(b" \t\r\n([\"<>;:@,.")
ESCAPED = frozenset(b"\"[]()\\\r\n")
CLOSE = {ord("("): ord(")"), ord("\""): ord("\""), ord("["): ord("]")}
KIND = {ord("("): COMMENT, ord("\""): QUOTE, ord("["): LITERAL}
COMMA_TOKEN = (COMMA, b"")

# quote.c's table: bytes a local part may hold bare
QUOTE_OK = frozenset(b"!#$%&'*+-./0123456789=?ABCDEFGHIJKLMNOPQRSTUVWXYZ^_`"
                     b"abcdefghijklmnopqrstuvwxyz{|}~")


def parse(s: bytes) -> list[tuple[int, bytes]] | None:
    """token822_parse(): the tokens of s, or None on a lexical error."""
    out = []
    n = len(s)
    i = 0
    while i < n:
        ch = s[i]
        if ch in SPECIALS:
            out.append((SPECIALS[ch], b""))
            i += 1
        elif ch in SPACE:
            i += 1
        elif ch == 0x29 or ch == 0x5d:  # ) ]
            return None
        elif ch in KIND:
            close = CLOSE[ch]
            nests = ch == 0x28
            level = 1
            buf = bytearray()
            while True:
                i += 1
                if i >= n:
                    return None
                c = s[i]
                if c == close:
                    level -= 1
                    if not level:
                        break
                elif nests and c == 0x28:
                    level += 1
                else:
                    if c == 0x5c:
                        i += 1
                        if i >= n:
                            return None
                    buf.append(s[i])
            i += 1
            out.append((KIND[ch], bytes(buf)))
        else:
            buf = bytearray()
            while True:
                if s[i] == 0x5c:
                    i += 1
                    if i >= n:
                        break
                buf.append(s[i])
                i += 1
                if i >= n or s[i] in NOT_ATOM:
                    break
            out.append((atom_type(buf), bytes(buf)))
    return out


def atom_type(s: bytes | bytearray) -> int:
    """atomcheck(): an atom holding bytes an atom may not show becomes a quoted string."""
    for ch in s:
        if ch < 32 or ch > 126 or ch == 0x29 or ch == 0x5d or ch == 0x5c:
            return QUOTE
    return ATOM


def escape(s: bytes) -> bytes:
    if not any(ch in ESCAPED for ch in s):
        return s
    return bytes(b for ch in s for b in ((0x5c, ch) if ch in ESCAPED else (ch,)))


def needspace(t1: int, t2: int) -> bool:
    if not t1:
        return False
    if t1 == COLON or t1 == COMMA or t2 == LEFT:
        return True
    return t1 in WORDS and t2 in WORDS


def unparse(tokens: list[tuple[int, bytes]], linelen: int = 80) -> bytes:
    """token822_unparse(): the field text, folded at commas, ending in LF."""
    out = bytearray()
    lineb = 0
    linee = None
    lasttype = 0

    def nsuw() -> None:
        # a candidate break after each comma; the previous one is dropped while
        # the line, counted up to here (old break included), still fits
        nonlocal lineb, linee
        cur = len(out)
        out.extend(b"\n ")
        if linee is not None and (not linelen or cur - lineb <= linelen):
            del out[linee:linee + 2]
            linee = len(out) - 2
        else:
            if linee is not None:
                lineb = linee + 1
            linee = cur

    for kind, s in tokens:
        if needspace(lasttype, kind):
            out.append(0x20)
        lasttype = kind
        if kind == COMMA:
            out.append(0x2c)
            nsuw()
        elif kind in SPECIAL_TEXT:
            out.extend(SPECIAL_TEXT[kind])
        elif kind == ATOM:
            out.extend(escape(s))
        elif kind == QUOTE:
            out.extend(b'"%s"' % escape(s))
        elif kind == LITERAL:
            out.extend(b"[%s]" % escape(s))
        elif kind == COMMENT:
            out.extend(b"(%s)" % escape(s))
    nsuw()
    del out[-1:]
    return bytes(out)


def unquote(tokens: list[tuple[int, bytes]]) -> bytes:
    """token822_unquote(): the address as the envelope carries it (comments dropped)."""
    parts = []
    for kind, s in tokens:
        if kind in SPECIAL_TEXT:
            parts.append(SPECIAL_TEXT[kind])
        elif kind == LITERAL:
            parts.append(b"[%s]" % s)
        elif kind == ATOM or kind == QUOTE:
            parts.append(s)
    return b"".join(parts)


def addrlist(ta: list[tuple[int, bytes]], callback) -> list[tuple[int, bytes]] | None:
    """token822_addrlist(): rewrite each address of a field (tokens 0 and 1 are
    the field name and colon) through callback(reversed_address_list); the new
    field's tokens, or None on a structural error.  RFC 822 address lists are
    easy to parse from right to left."""
    taout = []
    taaddr = []
    ingroup = False
    wordok = True
    beginning = 2
    t = len(ta) - 1

    def flush() -> None:
        if taaddr:
            callback(taaddr)
            taout.extend(taaddr)
            taaddr.clear()

    def flushcomma() -> None:
        if taaddr:
            flush()
            taout.append(COMMA_TOKEN)

    while t >= beginning:
        kind = ta[t][0]
        if kind == SEMI:
            flushcomma()
            if ingroup:
                return None
            ingroup = True
            wordok = True
        elif kind == COLON:
            flush()
            if not ingroup:
                return None
            ingroup = False
            while t >= beginning and ta[t][0] != COMMA:
                taout.append(ta[t])
                t -= 1
            if t >= beginning:
                taout.append(ta[t])
                t -= 1
            wordok = True
            continue
        elif kind == RIGHT:
            flushcomma()
            taout.append(ta[t])
            t -= 1
            while t >= beginning and ta[t][0] != LEFT:
                taaddr.append(ta[t])
                t -= 1
            # the address is used even when empty: <>
            callback(taaddr)
            taout.extend(taaddr)
            taaddr.clear()
            if t < beginning:
                return None
            taout.append(ta[t])
            t -= 1
            while t >= beginning and ta[t][0] in (COMMENT, ATOM, QUOTE, AT, DOT):
                taout.append(ta[t])
                t -= 1
            wordok = False
            continue
        elif kind == ATOM or kind == QUOTE or kind == LITERAL:
            if not wordok:
                flushcomma()
            wordok = False
            taaddr.append(ta[t])
            t -= 1
            continue
        elif kind == COMMENT:
            pass  # lexically a space; does not affect wordok
        elif kind == COMMA:
            flush()
            wordok = True
        else:
            wordok = True
            taaddr.append(ta[t])
            t -= 1
            continue
        taout.append(ta[t])
        t -= 1
    flush()
    t += 1
    while t > 0:
        t -= 1
        taout.append(ta[t])
    taout.reverse()
    return taout


def quote_need(s: bytes) -> bool:
    """quote_need(): whether a local part must be a quoted string."""
    if not s:
        return True
    for ch in s:
        if ch not in QUOTE_OK:
            return True
    return s[:1] == b"." or s[-1:] == b"." or b".." in s


def quote(s: bytes) -> bytes:
    if not quote_need(s):
        return s
    return b'"%s"' % s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') \
        .replace(b"\r", b"\\\r").replace(b"\n", b"\\\n")


def quote2(s: bytes) -> bytes:
    """quote2(): quote the part before the last @, keep the rest."""
    if not s:
        return s
    j = s.rfind(b"@")
    if j < 0:
        return quote(s)
    return quote(s[:j]) + s[j:]
