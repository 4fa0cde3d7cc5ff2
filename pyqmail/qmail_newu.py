"""qmail-newu: compile users/assign into users/cdb (spec/local.md §4.2)."""
import os
import sys

from pyqmail import auto, cdb, errors

FATAL = b"qmail-newu: fatal: "


class FormatError(Exception):
    pass


def parse_assign(data: bytes) -> list[tuple[bytes, bytes]]:
    """The records of users/assign, then the wildcard record (empty key)."""
    records = []
    wildchars = bytearray()
    start = 0
    while True:
        end = data.find(b"\n", start)
        line = data[start:] if end < 0 else data[start:end + 1]
        if line[:1] == b".":
            break
        if end < 0:
            raise FormatError()
        start = end + 1
        if b"\0" in line:
            raise FormatError()
        i = line.find(b":")
        if i <= 0:
            raise FormatError()
        if line[:1] == b"+":
            key = b"!" + line[1:i].lower()
            if i >= 2 and line[i - 1] not in wildchars:
                wildchars.append(line[i - 1])
        else:
            key = b"!" + line[1:i].lower() + b"\0"
        fields = line[i + 1:].split(b":", 6)
        if len(fields) < 7:
            raise FormatError()
        records.append((key, b"\0".join(fields[:6])))
    records.append((b"", bytes(wildchars)))
    return records


def fail(text: bytes) -> int:
    errors.write_line(2, FATAL + text)
    return 111


def run(qmail_home: bytes) -> int:
    os.umask(0o033)
    try:
        os.chdir(qmail_home)
    except OSError:
        return fail(b"unable to chdir")
    try:
        fd = os.open(b"users/assign", os.O_RDONLY)
    except OSError:
        return fail(b"unable to open users/assign")
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    except OSError:
        return fail(b"unable to read users/assign")
    try:
        os.close(os.open(b"users/cdb.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    except OSError:
        return fail(b"unable to open users/cdb.tmp")
    try:
        records = parse_assign(data)
    except FormatError:
        return fail(b"bad format in users/assign")
    try:
        cdb.write(b"users/cdb.tmp", records)
    except OSError:
        return fail(b"unable to write users/cdb.tmp")
    try:
        os.rename(b"users/cdb.tmp", b"users/cdb")
        # Linux makes a rename durable only once its directory is synced
        dirfd = os.open(b"users", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError:
        return fail(b"unable to move users/cdb.tmp to users/cdb")
    return 0


def main() -> None:
    sys.exit(run(auto.QMAIL_HOME))
