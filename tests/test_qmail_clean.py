"""qmail-clean: the request/reply protocol and the stale pid/ rule (spec/queue.md §6)."""
import grp
import os
import subprocess
import time

import pytest

from conftest import uid
from pyqmail import prot, qmail_clean


def clean(home, requests: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([os.path.join(home, "bin", "qmail-clean")], input=requests,
                          capture_output=True,
                          preexec_fn=lambda: prot.drop(uid("qmailq"), grp.getgrnam("qmail").gr_gid))


def make(home, *paths):
    for p in paths:
        full = os.path.join(home, "queue", p)
        with open(full, "wb") as f:
            f.write(b"x")
        os.chown(full, uid("qmailq"), -1)


def test_todo_and_foop(fresh_home):
    make(fresh_home, "intd/457", "todo/457", "mess/20/457", "intd/460", "mess/0/460")
    done = clean(fresh_home, b"todo/457\0foop/457\0foop/460\0")
    assert (done.returncode, done.stdout) == (0, b"+++")
    q = os.path.join(fresh_home, "queue")
    for p in ("intd/457", "todo/457", "mess/20/457", "intd/460", "mess/0/460"):
        assert not os.path.exists(os.path.join(q, p))


def test_missing_files_are_fine(fresh_home):
    assert clean(fresh_home, b"foop/99\0todo/98\0").stdout == b"++"


def test_unlink_failure_is_bang_and_stops(fresh_home):
    q = os.path.join(fresh_home, "queue")
    os.mkdir(os.path.join(q, "intd", "5"))           # unlink of a directory fails
    make(fresh_home, "mess/5/5")
    assert clean(fresh_home, b"foop/5\0").stdout == b"!"
    assert os.path.exists(os.path.join(q, "mess/5/5"))  # second file untouched


@pytest.mark.parametrize("request_", [b"todo\0", b"foo/1\0", b"blah/123\0", b"foop/\0",
                                      b"todo/abc\0", b"x" * 100 + b"\0", b"y" * 5000 + b"\0"])
def test_malformed_requests(fresh_home, request_):
    assert clean(fresh_home, request_).stdout == b"x"


def test_eof_mid_request_exits_0(fresh_home):
    done = clean(fresh_home, b"todo/1\0foop/2")
    assert (done.returncode, done.stdout) == (0, b"+")


def test_stale_pid_files_removed_at_start(fresh_home):
    pid = os.path.join(fresh_home, "queue", "pid")
    make(fresh_home, "pid/1.1.1", "pid/2.2.1")
    old = time.time() - 129600 - 10
    os.utime(os.path.join(pid, "1.1.1"), (old, time.time()))  # atime counts, not mtime
    done = clean(fresh_home, b"")
    assert done.returncode == 0
    assert os.listdir(pid) == ["2.2.1"]


def test_answer_unit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for d in ("intd", "todo", "mess", "mess/3"):
        (tmp_path / d).mkdir()
    (tmp_path / "todo" / "26").write_bytes(b"")
    assert qmail_clean.answer(b"todo/26", 23) == b"+"
    assert qmail_clean.answer(b"todo/26xyz", 23) == b"+"  # leading digits count
    assert not (tmp_path / "todo" / "26").exists()
