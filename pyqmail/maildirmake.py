"""maildirmake: create a maildir (spec/admin-tools.md §5)."""
import os
import sys

from pyqmail import errors

FATAL = b"maildirmake: fatal: "


def run(argv: list[bytes]) -> int:
    os.umask(0o077)
    if len(argv) < 2:
        errors.write_line(2, b"maildirmake: usage: maildirmake name")
        return 100
    name = argv[1]
    steps = ((os.mkdir, name, b"unable to mkdir "), (os.chdir, name, b"unable to chdir to "),
             (os.mkdir, b"tmp", b"unable to mkdir %s/" % name), (os.mkdir, b"new", b"unable to mkdir %s/" % name),
             (os.mkdir, b"cur", b"unable to mkdir %s/" % name))
    for call, path, text in steps:
        try:
            if call is os.mkdir:
                os.mkdir(path, 0o700)
            else:
                call(path)
        except (OSError, ValueError) as e:
            reason = errors.error_str(e) if isinstance(e, OSError) else b"invalid argument"
            shown = path if text.endswith(b" ") else path
            errors.write_line(2, FATAL + text + shown + b": " + reason)
            return 111
    return 0


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv]))
