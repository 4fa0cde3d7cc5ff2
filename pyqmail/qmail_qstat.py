"""qmail-qstat: how many messages are queued, and how many not yet preprocessed
(spec/admin-tools.md §2)."""
import os
import signal
import sys

from pyqmail import auto


def count_files(path: bytes) -> int:
    """Regular files below path (notqmail 1.09's `find -type f`)."""
    total = 0
    for top, dirs, files in os.walk(path):
        for name in files:
            try:
                if os.path.isfile(os.path.join(top, name)):
                    total += 1
            except OSError:
                pass
    return total


def run(qmail_home: bytes, out) -> int:
    queue = os.path.join(qmail_home, b"queue")
    out.write(b"messages in queue: %d\n" % count_files(os.path.join(queue, b"mess")))
    out.write(b"messages in queue but not yet preprocessed: %d\n"
              % count_files(os.path.join(queue, b"todo")))
    out.flush()
    return 0


def main() -> None:
    # qmail-qstat is a shell script: its echo dies of SIGPIPE, without a traceback
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(run(auto.QMAIL_HOME, sys.stdout.buffer))
