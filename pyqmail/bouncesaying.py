"""bouncesaying: bounce the message with a text, or only if a program says yes
(spec/admin-tools.md §6)."""
import os
import sys

from pyqmail import errors
from pyqmail.dotqmail_tools import Fatal, run_child

USAGE = b"bouncesaying: usage: bouncesaying error [ program [ arg ... ] ]"


def run(argv: list[bytes]) -> int:
    if len(argv) < 2:
        errors.write_line(2, USAGE)
        return 100
    if len(argv) > 2:
        try:
            code = run_child(argv[2:])
        except Fatal as e:
            errors.write_line(2, b"bouncesaying: fatal: " + e.text)
            return 111
        if code == 111:
            errors.write_line(2, b"bouncesaying: fatal: temporary child error")
            return 111
        if code != 0:
            return 0
    errors.write_line(2, argv[1] + b"\n")
    return 100


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv]))
