"""qreceipt: answer a Notice-Requested-Upon-Delivery-To request for this
address with a success notice to the sender (spec/admin-tools.md §6)."""
import os
import sys

from pyqmail import auto, environ, errors, headerbody, quote
from pyqmail.qmail import Qmail

USAGE = b"qreceipt: usage: qreceipt deliveryaddress"
FATAL = b"qreceipt: fatal: "


class Fatal(Exception):
    def __init__(self, text: bytes, code: int = 111):
        super().__init__(text)
        self.text = text
        self.code = code


def addresses(value: bytes, field: bytes) -> list[bytes]:
    """The addresses of an address-list field value, quotes and comments
    removed (token822's view, enough for an exact comparison)."""
    out = []
    current = bytearray()
    angle = None
    i = 0
    while i < len(value):
        ch = value[i:i + 1]
        if ch == b'"':
            end = i + 1
            text = bytearray()
            while end < len(value) and value[end:end + 1] != b'"':
                if value[end:end + 1] == b"\\":
                    end += 1
                text += value[end:end + 1]
                end += 1
            if end >= len(value):
                raise Fatal(b"unable to parse this: " + field, 100)
            (angle if angle is not None else current).extend(text)
            i = end + 1
            continue
        if ch == b"(":
            depth = 1
            i += 1
            while i < len(value) and depth:
                c = value[i:i + 1]
                if c == b"\\":
                    i += 1
                elif c == b"(":
                    depth += 1
                elif c == b")":
                    depth -= 1
                i += 1
            if depth:
                raise Fatal(b"unable to parse this: " + field, 100)
            continue
        if ch == b"<":
            angle = bytearray()
        elif ch == b">":
            if angle is None:
                raise Fatal(b"unable to parse this: " + field, 100)
            out.append(bytes(angle))
            angle = None
            current.clear()
        elif ch == b",":
            if angle is None:
                if current.strip():
                    out.append(bytes(current.strip()).replace(b" ", b"").replace(b"\t", b""))
                current.clear()
        elif ch not in (b"\r", b"\n"):
            (angle if angle is not None else current).extend(ch)
        i += 1
    if angle is not None:
        raise Fatal(b"unable to parse this: " + field, 100)
    if current.strip():
        out.append(bytes(current.strip()).replace(b" ", b"").replace(b"\t", b""))
    return [a.strip() for a in out]


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    if len(argv) < 2 or env.get(b"SENDER") is None:
        errors.write_line(2, USAGE)
        return 100
    target = argv[1]
    sender = env[b"SENDER"]
    try:
        data = bytearray()  # the header is all we need; linear however long
        while True:
            chunk = os.read(0, 65536)
            if not chunk:
                break
            scanned = max(len(data) - 1, 0)
            data += chunk
            if data.find(b"\n\n", scanned) >= 0:
                break
        data = bytes(data)
    except OSError:
        errors.write_line(2, FATAL + b"read error")
        return 111
    try:
        receipt = False
        messageid = None
        for field in headerbody.split(data)[0]:
            name = field.split(b":", 1)[0].strip().lower()
            if b":" not in field:
                continue
            if name == b"message-id":
                messageid = field
            elif name == b"notice-requested-upon-delivery-to":
                if target in addresses(field.split(b":", 1)[1], field):
                    receipt = True
        if not receipt or sender in (b"", b"#@[]"):
            return 0
        quoted = quote.quote2(sender)
        text = (b"From: DELIVERY NOTICE SYSTEM <" + quoted + b">\n"
                b"To: <" + quoted + b">\n"
                b"Subject: success notice\n\n"
                b"Hi! This is the qreceipt program. Your message was delivered to the\n"
                b"following address: " + target + b". Thanks for asking.\n")
        if messageid is not None:
            text += b"Your " + messageid
        qq = Qmail(auto.QMAIL_HOME, env)
        try:
            qq.open()
        except (OSError, errors.Temporary):
            raise Fatal(b"unable to fork") from None
        qq.put(text)
        qq.from_(b"")
        qq.to(sender)
        result = qq.close()
        if result:
            if result[:1] == b"D":
                raise Fatal(b"permanent qmail-queue error", 100)
            raise Fatal(b"temporary qmail-queue error")
    except Fatal as e:
        errors.write_line(2, FATAL + e.text)
        return e.code
    return 0


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
