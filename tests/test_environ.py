"""environ.original(): the environment as the caller gave it, with the
interpreter's start-up changes (PEP 538's LC_CTYPE) undone."""
import subprocess

from conftest import DEPS, PYTHON, SRC

SCRIPT = """
import os, sys
sys.path[:0] = [%r, %r]
from pyqmail import environ
print(sorted(environ.STARTUP.items()))
print(sorted(environ.original().items()))
os.environb[b"LC_CTYPE"] = b"de_DE.UTF-8"     # set by the program itself: kept
os.environb[b"ADDED"] = b"1"
del os.environb[b"GONE"]
print(sorted(environ.original().items()))
""" % (SRC, DEPS)


def run(env):
    done = subprocess.run([PYTHON, "-I", "-S", "-c", SCRIPT], env=env, capture_output=True, check=True)
    return done.stdout.decode().splitlines()


def test_the_coerced_locale_is_undone():
    startup, first, later = run({"PATH": "/bin", "GONE": "x"})
    assert startup == "[(b'LC_CTYPE', (None, b'C.UTF-8'))]"
    assert first == "[(b'GONE', b'x'), (b'PATH', b'/bin')]"
    assert later == "[(b'ADDED', b'1'), (b'LC_CTYPE', b'de_DE.UTF-8'), (b'PATH', b'/bin')]"


def test_a_caller_locale_is_left_alone():
    startup, first, _ = run({"PATH": "/bin", "GONE": "x", "LC_ALL": "C.UTF-8"})
    assert startup == "[]"
    assert first == "[(b'GONE', b'x'), (b'LC_ALL', b'C.UTF-8'), (b'PATH', b'/bin')]"
