"""The programs of QMAIL_HOME/bin are the same few lines of Python each (install
writes them), differing only in `from pyqmail.NAME import main`.  A process
that would exec one of them (qmail-tcpsrv for each connection, sendmail for
qmail-inject) may run that module's code itself instead, but only when the
file it would exec is still this installation's wrapper: an administrator who
put another program there gets it exec'd."""
import os

from pyqmail import auto

LINE = b"from pyqmail.%s import main"


def module_name(program: bytes, own_path: bytes, own_module: str) -> str | None:
    """The pyqmail module that program runs, when program is QMAIL_HOME/bin/NAME
    and its text is that of own_path (the wrapper this process was started as,
    for own_module) but for the module line; else None."""
    name = os.path.basename(program)
    if b"/" not in program or not name:
        return None
    if os.path.realpath(program) != os.path.realpath(os.path.join(auto.QMAIL_HOME, b"bin", name)):
        return None
    try:
        with open(program, "rb") as f:
            data = f.read(4096)
        with open(own_path, "rb") as f:
            own = f.read(4096)
    except OSError:
        return None
    own_line = LINE % own_module.encode("ascii")
    if own_line not in own:
        return None
    for line in data.split(b"\n"):
        if line.startswith(b"from pyqmail.") and line.endswith(b" import main"):
            module = line[len(b"from pyqmail."):-len(b" import main")]
            if module.replace(b"_", b"").isalnum() and module.isascii() \
                    and own.replace(own_line, LINE % module) == data:
                return module.decode("ascii")
    return None
