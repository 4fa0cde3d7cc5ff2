"""The environment a program was started with.

Python changes its own environment at start-up (PEP 538 locale coercion adds
LC_CTYPE=C.UTF-8), so os.environb is not what the caller passed.  Programs that
hand their environment on (qmail-lspawn, qmail-local: "nothing else is set or
removed", spec/local.md §5.7; every program to the QMAILQUEUE program it runs;
qmail-start to its logger and helpers; qmail-popup, checkpassword and tcp-env to
the program they run) read the original from /proc/self/environ, which the
kernel keeps as execve() got it.  Read it before a change of uid: /proc/self is
root's afterwards.

A program run in-process by a forked child of a listener (qmail-tcpsrv) was
never exec'd: the listener names the environment an exec would have given it
with set_original().
"""
import os

_given: dict[bytes, bytes] | None = None


def set_original(env: dict[bytes, bytes]) -> None:
    """What original() is, for the rest of this process: called only in a
    forked child about to run a program's code, never in its parent."""
    global _given
    _given = dict(env)


def original() -> dict[bytes, bytes]:
    """The execve() environment; os.environb where /proc is missing."""
    if _given is not None:
        return dict(_given)
    try:
        with open(b"/proc/self/environ", "rb") as f:
            data = f.read()
    except OSError:
        return dict(os.environb)
    env = {}
    for item in data.split(b"\0"):
        key, eq, value = item.partition(b"=")
        if eq and key and key not in env:
            env[key] = value
    return env
