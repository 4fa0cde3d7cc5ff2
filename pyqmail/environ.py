"""The environment a program was started with.

Python changes its own environment at start-up (PEP 538 locale coercion adds
LC_CTYPE=C.UTF-8), so os.environb is not what the caller passed.  Programs that
hand their environment on (qmail-lspawn, qmail-local: "nothing else is set or
removed", spec/local.md §5.7; every program to the QMAILQUEUE program it runs;
qmail-start to its logger and helpers; qmail-popup, checkpassword and tcp-env to
the program they run) hand on original(): os.environb with those start-up
changes undone.

STARTUP is found once, at import, by comparing os.environb with
/proc/self/environ, which the kernel keeps as execve() got it (and which is
root's once the process has changed its uid).  A child that qmail-tcpsrv forks
to run a program's code inherits it, and gets the same changes made to its
environment as a new interpreter would make.
"""
import os


def exec_environment() -> dict[bytes, bytes] | None:
    """The environment as execve() gave it, None when /proc does not say."""
    try:
        with open(b"/proc/self/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    env = {}
    for item in data.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq and key and key not in env:
            env[key] = value
    return env


def startup_changes() -> dict[bytes, tuple[bytes | None, bytes | None]]:
    """name -> (the caller's value, the interpreter's) for each variable the
    interpreter changed at start; None for a variable that is not set."""
    given = exec_environment()
    if given is None:
        return {}
    made = os.environb
    changes = {name: (value, made.get(name)) for name, value in given.items()
               if made.get(name) != value}
    changes.update((name, (None, value)) for name, value in made.items() if name not in given)
    return changes


STARTUP = startup_changes()


def original() -> dict[bytes, bytes]:
    """The environment as a C program's environ would be: os.environb with each
    start-up change undone where the variable still has the interpreter's value."""
    env = dict(os.environb)
    for name, (given, made) in STARTUP.items():
        if env.get(name) == made:
            if given is None:
                env.pop(name, None)
            else:
                env[name] = given
    return env
