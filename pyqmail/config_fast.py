"""config-fast FQDN: write control/me, defaultdomain, plusdomain, locals and
rcpthosts exactly as qmail's config-fast.sh does (spec/control.md §4)."""
import os
import re
import sys

from pyqmail import auto, errors

USAGE = b"config-fast: usage: config-fast full.host.name"


def default_domain(fqdn: bytes) -> bytes:
    """sed 's/^\\([^.]*\\)\\.\\([^.]*\\)\\./\\2\\./': drop the first label of 3+."""
    return re.sub(rb"^([^.]*)\.([^.]*)\.", rb"\2.", fqdn, count=1)


def plus_domain(fqdn: bytes) -> bytes:
    """sed 's/^.*\\.\\([^.]*\\)\\.\\([^.]*\\)$/\\1.\\2/': the last two labels of 3+."""
    return re.sub(rb"^.*\.([^.]*)\.([^.]*)$", rb"\1.\2", fqdn, count=1)


def put(control: bytes, name: bytes, value: bytes, append: bool = False) -> None:
    """`echo VALUE > control/NAME` (or >>), then chmod 644."""
    path = os.path.join(control, name)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, value + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, 0o644)


def say(out, line: bytes) -> None:
    out.write(line + b"\n")
    out.flush()


def run(argv: list[bytes], qmail_home: bytes, out) -> int:
    if len(argv) < 2 or not argv[1]:
        errors.write_line(2, USAGE)
        return 100
    fqdn = argv[1]
    if b"\n" in fqdn or b"/" in fqdn:
        errors.write_line(2, b"config-fast: fatal: not a host name: %r" % fqdn)
        return 100
    control = os.path.join(qmail_home, b"control")
    ddom, pdom = default_domain(fqdn), plus_domain(fqdn)
    try:
        say(out, b"Your fully qualified host name is %s." % fqdn)
        say(out, b"Putting %s into control/me..." % fqdn)
        put(control, b"me", fqdn)
        say(out, b"Putting %s into control/defaultdomain..." % ddom)
        put(control, b"defaultdomain", ddom)
        say(out, b"Putting %s into control/plusdomain..." % pdom)
        put(control, b"plusdomain", pdom)
        say(out, b"Putting %s into control/locals..." % fqdn)
        put(control, b"locals", fqdn, append=True)
        say(out, b"Putting %s into control/rcpthosts..." % fqdn)
        put(control, b"rcpthosts", fqdn, append=True)
    except OSError as e:
        errors.write_line(2, b"config-fast: fatal: unable to write to %s: %s"
                          % (control, errors.error_str(e)))
        return 111
    say(out, b"Now qmail will refuse to accept SMTP messages except to %s." % fqdn)
    say(out, b"Make sure to change rcpthosts if you add hosts to locals or virtualdomains!")
    return 0


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], auto.QMAIL_HOME, sys.stdout.buffer))
