"""datemail: `exec QMAILHOME/bin/predate QMAILHOME/bin/sendmail "$@"` — a
sendmail that adds a local-time Date field (spec/inject.md §7)."""
import os
import sys

from pyqmail import auto, environ, errors


def run(argv: list[bytes], env: dict[bytes, bytes], qmail_home: bytes) -> int:
    predate = os.path.join(qmail_home, b"bin/predate")
    try:
        os.execve(predate, [predate, os.path.join(qmail_home, b"bin/sendmail")] + argv[1:], env)
    except OSError as e:
        errors.write_line(2, b"datemail: fatal: unable to run %s: %s" % (predate, errors.error_str(e)))
    return 111


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original(), auto.QMAIL_HOME))
