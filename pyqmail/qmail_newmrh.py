"""qmail-newmrh: compile control/morercpthosts into control/morercpthosts.cdb
(spec/control.md §3)."""
import os
import sys

from pyqmail import auto, cdb, control, errors, fdio

FATAL = b"qmail-newmrh: fatal: "


def fail(text: bytes) -> int:
    errors.write_line(2, FATAL + text)
    return 111


def run(qmail_home: bytes) -> int:
    os.umask(0o033)
    try:
        os.chdir(qmail_home)
    except OSError as e:
        return fail(b"unable to chdir to %s: %s" % (qmail_home, errors.error_str(e)))
    try:
        with open(b"control/morercpthosts", "rb") as f:
            data = f.read()
    except OSError as e:
        return fail(b"unable to read control/morercpthosts: %s" % errors.error_str(e))
    records = [(line.lower(), b"") for line in control.parse_list(data)]
    try:
        cdb.write(b"control/morercpthosts.tmp", records)
    except OSError as e:
        return fail(b"unable to write to control/morercpthosts.tmp: %s" % errors.error_str(e))
    try:
        os.rename(b"control/morercpthosts.tmp", b"control/morercpthosts.cdb")
        fdio.fsync_dir(b"control")
    except OSError as e:
        # qmail prints the reason right after the file name, with no separator
        return fail(b"unable to move control/morercpthosts.tmp to "
                    b"control/morercpthosts.cdb" + errors.error_str(e))
    return 0


def main() -> None:
    sys.exit(run(auto.QMAIL_HOME))
