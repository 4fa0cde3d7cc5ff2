"""The environment a program was started with.

Python changes its own environment at start-up (PEP 538 locale coercion adds
LC_CTYPE=C.UTF-8), so os.environb is not what the caller passed.  Programs that
hand their environment on to user programs (qmail-lspawn, qmail-local: "nothing
else is set or removed", spec/local.md §5.7) read the original from
/proc/self/environ, which the kernel keeps as execve() got it.
"""
import os


def original() -> dict[bytes, bytes]:
    """The execve() environment; os.environb where /proc is missing."""
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
