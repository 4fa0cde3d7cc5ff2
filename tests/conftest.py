"""Shared fixtures: installations into temporary QMAIL_HOMEs with the real qmail
uids (the tests run as root), and bounded waiting."""
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SRC)

PYTHON = "/usr/bin/python3"
DEPS = os.path.join(SRC, "build", "deps")


def need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (make test runs as root)")


def public_tmpdir(prefix: str) -> str:
    """A fresh directory below /tmp that every qmail uid can traverse."""
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    return path


def install(home: str, source: str = SRC) -> subprocess.CompletedProcess:
    """make setup for QMAIL_HOME=home from the checkout at source."""
    return subprocess.run([PYTHON, "-m", "pyqmail.install", "setup", home, source, DEPS, PYTHON],
                          cwd=source, capture_output=True)


def check(home: str, source: str = SRC) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "pyqmail.install", "check", home, source],
                          cwd=source, capture_output=True)


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


@pytest.fixture(scope="session")
def qmail_home():
    """One installation shared by the tests that only read it."""
    need_root()
    base = public_tmpdir("pyqmail-home-")
    home = os.path.join(base, "qmail")
    done = install(home)
    assert done.returncode == 0, done.stderr.decode()
    yield home
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_home():
    """An installation of its own, for tests that change it."""
    need_root()
    base = public_tmpdir("pyqmail-home-")
    home = os.path.join(base, "qmail")
    done = install(home)
    assert done.returncode == 0, done.stderr.decode()
    yield home
    shutil.rmtree(base, ignore_errors=True)


def in_child(body) -> bytes:
    """body() run in a forked child, which then exits: the bytes it returned,
    or the repr of what it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            try:
                out = body()
            except BaseException as e:
                out = repr(e).encode()
            os.write(w, out)
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return out


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout}s")
        time.sleep(0.01)
