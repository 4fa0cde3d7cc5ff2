"""except: reverse a program's verdict: success bounces (with no text), failure
succeeds (spec/admin-tools.md §6)."""
import os
import sys

from pyqmail import errors
from pyqmail.dotqmail_tools import Fatal, run_child

USAGE = b"except: usage: except program [ arg ... ]"


def run(argv: list[bytes]) -> int:
    if len(argv) < 2:
        errors.write_line(2, USAGE)
        return 100
    try:
        code = run_child(argv[1:])
    except Fatal as e:
        errors.write_line(2, b"except: fatal: " + e.text)
        return 111
    if code == 0:
        return 100
    if code == 111:
        errors.write_line(2, b"except: fatal: temporary child error")
        return 111
    return 0


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv]))
