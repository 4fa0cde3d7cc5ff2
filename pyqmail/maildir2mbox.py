"""maildir2mbox: move the messages of $MAILDIR to the end of $MAIL
(spec/maildir-mbox.md §5)."""
import fcntl
import os
import sys

from pyqmail import errors, maildir
from pyqmail.qmail_local import from_quote, myctime

FATAL = b"maildir2mbox: fatal: "


class Fatal(Exception):
    def __init__(self, text: bytes):
        super().__init__(text)
        self.text = text


def from_line(data: bytes, mtime: float) -> bytes:
    first = data.split(b"\n", 1)[0] + (b"\n" if b"\n" in data else b"")
    if first.startswith(b"Return-Path: <"):
        if first.startswith(b"Return-Path: <>"):
            who = b"MAILER-DAEMON"
        else:
            who = first[len(b"Return-Path: <"):-2].replace(b" ", b"-").replace(b"\t", b"-")
    else:
        who = b"XXX"
    return b"From " + who + b" " + myctime(mtime)


def quoted(data: bytes) -> bytes:
    """The message >From-quoted, an unterminated last line ended, a blank line."""
    end = b"\n" if data and not data.endswith(b"\n") else b""
    return from_quote(data) + end + b"\n"


def convert(env: dict[bytes, bytes]) -> None:
    mail = env.get(b"MAIL")
    if mail is None:
        raise Fatal(b"MAIL not set")
    mailtmp = env.get(b"MAILTMP")
    if mailtmp is None:
        raise Fatal(b"MAILTMP not set")
    directory = env.get(b"MAILDIR")
    if directory is None:
        raise Fatal(b"MAILDIR not set")
    try:
        os.chdir(directory)
    except OSError as e:
        raise Fatal(b"unable to chdir to %s: %s" % (directory, errors.error_str(e))) from None
    maildir.clean_tmp()
    try:
        messages = maildir.scan((b"new", b"cur"))
    except maildir.ScanError as e:
        raise Fatal(e.text) from None
    if not messages:
        return
    # as in qmail, a relative MAIL or MAILTMP names a file in $MAILDIR (the cwd)
    try:
        lock_fd = os.open(mail, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
    except OSError as e:
        raise Fatal(b"unable to lock %s: %s" % (mail, errors.error_str(e))) from None
    try:
        with open(mail, "rb") as f:
            old = f.read()
    except OSError as e:
        raise Fatal(b"unable to read %s: %s" % (mail, errors.error_str(e))) from None
    try:
        out = os.open(mailtmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        raise Fatal(b"unable to create %s: %s" % (mailtmp, errors.error_str(e))) from None
    converted = []
    try:
        chunks = [old]
        for mtime, path in messages:
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise Fatal(b"unable to read $MAILDIR/%s: %s" % (path, errors.error_str(e))) from None
            chunks.append(from_line(data, mtime) + quoted(data))
            converted.append(path)
        view = memoryview(b"".join(chunks))
        while view:
            view = view[os.write(out, view):]
        os.fsync(out)
        os.close(out)
    except OSError as e:
        raise Fatal(b"unable to write to %s: %s" % (mailtmp, errors.error_str(e))) from None
    try:
        os.rename(mailtmp, mail)
    except OSError as e:
        raise Fatal(b"unable to move %s to %s: %s" % (mailtmp, mail, errors.error_str(e))) from None
    for path in converted:
        try:
            os.unlink(path)
        except OSError as e:
            errors.write_line(2, b"maildir2mbox: warning: $MAILDIR/%s will be delivered twice; "
                              b"unable to unlink: %s" % (path, errors.error_str(e)))


def run(env: dict[bytes, bytes]) -> int:
    os.umask(0o077)
    try:
        convert(env)
    except Fatal as e:
        errors.write_line(2, FATAL + e.text)
        return 111
    return 0


def main() -> None:
    sys.exit(run(dict(os.environb)))
