"""forward: queue a copy of the message to the given addresses
(spec/admin-tools.md §6)."""
import os
import sys

from pyqmail import environ, errors
from pyqmail.dotqmail_tools import Fatal, queue_copy

FATAL = b"forward: fatal: "


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    try:
        sender = env.get(b"NEWSENDER")
        if sender is None:
            raise Fatal(b"NEWSENDER not set", 100)
        dtline = env.get(b"DTLINE")
        if dtline is None:
            raise Fatal(b"DTLINE not set", 100)
        qp = queue_copy(env, dtline, sender, argv[1:])
    except Fatal as e:
        errors.write_line(2, FATAL + e.text)
        return e.code
    errors.write_line(2, b"forward: qp %d" % qp)
    return 0


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
