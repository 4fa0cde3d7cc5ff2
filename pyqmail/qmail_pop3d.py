"""qmail-pop3d: distribute mail over POP3 from a maildir (spec/pop3.md §4).

    qmail-pop3d maildirname

Started by a checkpassword, already running as the mailbox owner with the cwd
at $HOME; fd 0 and fd 1 are the network.  The conversation is pyqmail.pop3's;
this module owns the descriptors, the timeouts and the maildir's files.
It imports only small modules: it starts once per connection.
"""
import os
import sys

from pyqmail import errors, fdio, maildir, pop3

TIMEOUT = 1200    # qmail-pop3d's timeoutread/timeoutwrite
READSIZE = 1024
UID0 = b"qmail-pop3d invoked as uid 0, terminating\n"


class Mailbox:
    """The message files, relative to the maildir (the cwd)."""

    def open(self, path: bytes):
        # qmail's open_read(): O_NDELAY, so a FIFO planted in the maildir
        # cannot hang the session
        return open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY), "rb", buffering=0)

    def unlink(self, path: bytes) -> None:
        os.unlink(path)

    def rename(self, path: bytes, new: bytes) -> None:
        os.rename(path, new)


def getlist() -> list[pop3.Message]:
    """getlist(): clean tmp/, then new/ and cur/ by mtime, with sizes;
    OSError when a directory cannot be scanned."""
    maildir.clean_tmp()
    messages = []
    for _, path in maildir.scan((b"new", b"cur")):
        try:
            size = os.stat(path).st_size
        except OSError:
            size = 0
        messages.append(pop3.Message(path, size))
    return messages


def send(outfd: int, data: bytes) -> bool:
    """safewrite(): False when the write fails or times out."""
    try:
        fdio.write_all_timeout(outfd, data, TIMEOUT)
    except (OSError, fdio.Timeout):
        return False
    return True


def run(argv: list[bytes], infd: int = 0, outfd: int = 1) -> int:
    """One POP3 transaction as qmail-pop3d(8); return the exit code."""
    # notqmail 1.08: never serve a mailbox as root; the network is read by
    # no root process but qmail-popup (INTERFACE.md §4)
    if os.getuid() == 0:
        errors.write_line(2, UID0)
        return 1
    if len(argv) < 2:
        send(outfd, pop3.ERR_NOMAILDIR)
        return 0
    try:
        os.chdir(argv[1])
    except OSError:
        send(outfd, pop3.ERR_NOMAILDIR)
        return 0
    try:
        messages = getlist()
    except OSError:
        send(outfd, pop3.ERR_SCAN)
        return 0
    session = pop3.Pop3d(messages, Mailbox())
    if not send(outfd, session.greet()):
        return 0
    while session.exit_code is None:
        try:
            data = fdio.read_timeout(infd, READSIZE, TIMEOUT)
        except (OSError, fdio.Timeout):
            return 0    # die(): no deletion, no renaming
        for chunk in session.receive_writes(data):
            if not send(outfd, chunk):
                return 0
    return session.exit_code


def main() -> None:
    try:
        code = run([os.fsencode(a) for a in sys.argv])
    except MemoryError:
        send(1, pop3.ERR_NOMEM)
        code = 0
    except Exception:
        # one catch-all: a bug ends the session as die() does, deleting
        # nothing, with a line in the log and never a traceback
        errors.note_bug(2)
        code = 0
    sys.exit(code)
