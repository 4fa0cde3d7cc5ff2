"""splogger: lines on fd 0 to syslog (spec/start-and-logs.md §2).

    splogger [ tag [ facility ] ]
"""
import os
import sys
import time

FOLD = 799
PRINTABLE = bytes(c if 0x20 <= c <= 0x7E else 0x3F for c in range(256))


def priority_of(first: bytes, syslog) -> int:
    if first.startswith(b"alert:"):
        return syslog.LOG_ALERT
    if first.startswith(b"warning:"):
        return syslog.LOG_WARNING
    return syslog.LOG_INFO


def stamp() -> bytes:
    t = time.time()
    seconds = int(t)
    return b"%d.%06d" % (seconds, int((t - seconds) * 1000000))


def run(argv: list[bytes], in_fd: int, syslog) -> int:
    tag = argv[1] if len(argv) > 1 else b"splogger"
    facility = 2
    if len(argv) > 2:
        digits = b""
        for c in argv[2]:
            if 48 <= c <= 57:
                digits += bytes((c,))
            else:
                break
        facility = int(digits) if digits else 0
    syslog.openlog(tag.decode("latin-1"), 0, facility << 3)
    line = bytearray()
    first_sent = False
    current = (b"", 0)

    def send(text: bytes, continuation: bool) -> None:
        nonlocal current
        if not continuation:
            current = (stamp(), priority_of(text, syslog))
        sep = b"+" if continuation else b" "
        syslog.syslog(current[1], (current[0] + sep + text).decode("latin-1"))

    while True:
        try:
            data = os.read(in_fd, 4096)
        except OSError:
            return 0
        if not data:
            return 0
        parts = data.split(b"\n")
        for i, part in enumerate(parts):
            text = part.translate(PRINTABLE)
            while text:
                room = FOLD - len(line)
                if len(text) <= room:
                    line += text
                    text = b""
                else:
                    line += text[:room]
                    text = text[room:]
                    send(bytes(line), first_sent)
                    first_sent = True
                    line.clear()
            if i < len(parts) - 1:  # an LF ended this part
                if line:
                    send(bytes(line), first_sent)
                line.clear()
                first_sent = False


def main() -> None:
    import syslog
    sys.exit(run([os.fsencode(a) for a in sys.argv], 0, syslog))
