"""condredirect: if a program says yes (exit 0), redirect the message and stop
the .qmail file (exit 99) (spec/admin-tools.md §6)."""
import os
import sys

from pyqmail import environ, errors
from pyqmail.dotqmail_tools import Fatal, queue_copy, run_child

FATAL = b"condredirect: fatal: "
USAGE = b"condredirect: usage: condredirect newaddress program [ arg ... ]"


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    if len(argv) < 3:
        errors.write_line(2, USAGE)
        return 100
    try:
        code = run_child(argv[2:])
        if code == 111:
            raise Fatal(b"temporary child error")
        if code != 0:
            return 0
        try:
            os.lseek(0, 0, os.SEEK_SET)
        except OSError as e:
            raise Fatal(b"unable to rewind: " + errors.error_str(e)) from None
        sender = env.get(b"SENDER")
        if sender is None:
            raise Fatal(b"SENDER not set", 100)
        dtline = env.get(b"DTLINE")
        if dtline is None:
            raise Fatal(b"DTLINE not set", 100)
        qp = queue_copy(env, dtline, sender, [argv[1]])
    except Fatal as e:
        errors.write_line(2, FATAL + e.text)
        return e.code
    errors.write_line(2, b"condredirect: qp %d" % qp)
    return 99


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
