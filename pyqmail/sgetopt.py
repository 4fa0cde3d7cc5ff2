"""qmail's getopt (subgetopt.c, sgetopt.c): options stop at the first argument
not starting with `-`, at `--` (consumed) or at a lone `-` (kept); no reordering.

    opts = Getopt(argv, b"aAhHnNf:")
    while (opt := opts.next()) is not None:
        ...                       # opt is a byte string of one letter, or b"?"
    rest = argv[opts.optind:]

On a problem `next()` returns b"?" after writing qmail's message on fd 2:
`PROG: illegal option -- X` or `PROG: option requires an argument -- X`.
"""
import os

from pyqmail import errors


class Getopt:
    """One scan over argv (qmail's optind/optpos/optarg/optproblem state)."""

    def __init__(self, argv: list[bytes], opts: bytes, report_fd: int = 2):
        self.argv = argv
        self.opts = opts
        self.report_fd = report_fd
        self.optind = 1
        self.optpos = 0
        self.optarg: bytes | None = None
        self.optproblem = b""
        self.progname = os.path.basename(argv[0]) if argv else b""

    def _sub(self) -> bytes | None:
        """subgetopt(): the next option letter, b"?" on a problem, None when done."""
        argv = self.argv
        self.optarg = None
        if self.optind >= len(argv):
            return None
        if self.optpos and self.optpos >= len(argv[self.optind]):
            self.optind += 1
            self.optpos = 0
            if self.optind >= len(argv):
                return None
        word = argv[self.optind]
        if not self.optpos:
            if word[:1] != b"-":
                return None
            self.optpos = 1
            if word[1:2] in (b"-", b""):
                if word[1:2]:
                    self.optind += 1
                self.optpos = 0
                return None
        c = word[self.optpos:self.optpos + 1]
        self.optpos += 1
        i = self.opts.find(c) if c != b":" else -1
        if i < 0:
            self.optproblem = c
            return b"?"
        if self.opts[i + 1:i + 2] == b":":
            self.optarg = word[self.optpos:]
            self.optind += 1
            self.optpos = 0
            if not self.optarg:
                if self.optind >= len(argv):
                    self.optproblem = c
                    return b"?"
                self.optarg = argv[self.optind]
                self.optind += 1
        return c

    def next(self) -> bytes | None:
        """sgetopt(): subgetopt plus qmail's message on a problem."""
        c = self._sub()
        if c == b"?":
            if self.optind < len(self.argv):
                what = b": illegal option -- "
            else:
                what = b": option requires an argument -- "
            errors.write_line(self.report_fd, self.progname + what + self.optproblem + b"\n")
        return c
