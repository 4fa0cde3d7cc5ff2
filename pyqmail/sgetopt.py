"""qmail's getopt (sgetopt.c/subgetopt.c): option letters, `opts` as in C
(`x:` takes an argument), stop at the first non-option, `--` or `-`.

`getopt()` scans all of argv at once; `Getopt` steps through it as C's loop
does, for callers that act on an option before seeing the next one (sendmail
execs at -bp/-bs) or move the scan position (sendmail's -E/-J):

    opts = Getopt(argv, b"aAhHnNf:")
    while (opt := opts.next()) is not None:
        ...                       # one letter, or b"?" after qmail's message on fd 2
    rest = argv[opts.optind:]
"""
import os

from pyqmail import errors


def getopt(argv: list[bytes], opts: bytes) -> tuple[list[tuple[bytes, bytes | None]], list[bytes], bytes | None]:
    """(options in order, remaining arguments, problem line or None).

    At an unknown letter or a missing argument parsing stops and the problem is
    qmail's stderr line: `PROG: illegal option -- X\\n` or
    `PROG: option requires an argument -- X\\n` (PROG = basename of argv[0]).
    """
    prog = os.path.basename(argv[0]) if argv else b""
    found = []
    index = 1
    while index < len(argv):
        arg = argv[index]
        if arg[:1] != b"-" or arg in (b"-",):
            break
        if arg[1:2] == b"-":
            index += 1
            break
        pos = 1
        while pos < len(arg):
            c = arg[pos:pos + 1]
            pos += 1
            spot = opts.find(c) if c != b":" else -1
            if spot < 0:
                return found, argv[index:], b"%s: illegal option -- %s\n" % (prog, c)
            if opts[spot + 1:spot + 2] == b":":
                value = arg[pos:]
                if not value:
                    if index + 1 >= len(argv):
                        return found, argv[index + 1:], b"%s: option requires an argument -- %s\n" % (prog, c)
                    index += 1
                    value = argv[index]
                found.append((c, value))
                pos = len(arg)
            else:
                found.append((c, None))
        index += 1
    return found, argv[index:], None


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
