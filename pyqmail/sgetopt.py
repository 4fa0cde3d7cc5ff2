"""qmail's getopt (sgetopt.c/subgetopt.c): option letters, `opts` as in C
(`x:` takes an argument), stop at the first non-option, `--` or `-`."""
import os


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
