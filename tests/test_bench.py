"""make bench's harness, run once in its quick form with small counts: it must
start both MTAs, run every scenario, count every message it sent, write the
results and the chart, and leave nothing running.  Never a speed."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import PYTHON, SRC, need_root, public_tmpdir

BENCH_VENV_PYTHON = os.path.join(SRC, "build", "bench-venv", "bin", "python")
MESSAGES = 30
DEFERRED = 300


def processes() -> set[tuple[int, str, str]]:
    """(pid, command line, cwd) of every process."""
    out = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().decode(errors="replace")
                out.add((int(pid), cmd, os.readlink(f"/proc/{pid}/cwd")))
            except OSError:
                continue
    return out


@pytest.fixture
def out():
    need_root()
    path = public_tmpdir("pyqmail-bench-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_quick_bench_counts_every_message(out):
    before = processes()
    done = subprocess.run([PYTHON, os.path.join(SRC, "bench", "bench.py"), "--quick", "--settle", "0",
                           "--messages", str(MESSAGES), "--deferred", str(DEFERRED), "--out", out,
                           "--tmp", out, "--chart-python", BENCH_VENV_PYTHON],
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    (name,) = [n for n in os.listdir(out) if n.startswith("results-") and n.endswith(".json")]
    with open(os.path.join(out, name)) as f:
        results = json.load(f)
    run = results["run"]
    assert run["python"] == "/usr/bin/python3" and run["quick"] and run["rounds"] == 1
    assert run["filesystem"] and run["cores"] == os.cpu_count()
    scenarios = {s["scenario"]: s for s in results["scenarios"]}
    assert set(scenarios) == {"queue", "smtp-s10", "smtp-s1", "smtp-s10-d", "inject", "local",
                              "relay", "startup", "memory", "silly"}
    counted = {"queue": MESSAGES, "smtp-s10": MESSAGES, "smtp-s1": MESSAGES, "smtp-s10-d": MESSAGES,
               "inject": MESSAGES, "local": MESSAGES, "relay": MESSAGES // 2}
    for key, n in counted.items():
        s = scenarios[key]
        assert s["verified"] is True and s["messages"] == n, key
        for figure in s["figures"].values():
            assert [r["count"] for r in figure["detail"]] == [n], key
            assert figure["median"] > 0
        assert all(v > 0 for v in s["ratio"].values())
    for key in ("smtp-s10", "smtp-s1", "smtp-s10-d", "relay"):
        for figure in scenarios[key]["figures"].values():
            (detail,) = figure["detail"]
            assert detail["timeline"][-1][1] == (MESSAGES // 2 if key == "relay" else MESSAGES)
    # the CPU and page faults of each MTA's processes are accounted, listener and
    # children included (a resident process's few clock ticks for 30 messages,
    # Postfix's or qmail-send's, may round to 0 and leave it out)
    for mta, figure in scenarios["smtp-s10"]["figures"].items():
        (detail,) = figure["detail"]
        assert detail["cpu_ms_per_message"] == pytest.approx(
            sum(c["cpu_ms"] for c in detail["cpu"].values()), abs=0.01)
        assert mta == "postfix" or detail["cpu_ms_per_message"] > 0
    programs = {mta: set(f["detail"][0]["cpu"]) for mta, f in scenarios["smtp-s10"]["figures"].items()}
    assert "tcpserver/children" in programs["pyqmail"]
    # sessions: qmail-tcpsrv's qmail-smtpd processes, running or reaped
    assert {"qmail-smtpd", "qmail-tcpsrv/children"} & programs["pyqmail-fast"]
    # deliveries: qmail-lspawn's resident qmail-locals, running or reaped
    for mta in ("pyqmail", "pyqmail-fast"):
        assert {"qmail-local", "qmail-lspawn/children"} & programs[mta]
    assert {"smtpd", "cleanup", "local"} <= programs["postfix"]
    assert set(scenarios["queue"]["figures"]) == {"pyqmail service", "pyqmail qmail-queue",
                                                  "floor fsync", "floor no fsync"}
    assert set(scenarios["relay"]["figures"]) == {"pyqmail", "pyqmail-fast", "postfix"}
    assert set(scenarios["local"]["figures"]) == {"pyqmail queue service", "postfix one SMTP session"}
    assert set(scenarios["startup"]["figures"]) == {"pyqmail qmail-smtpd", "postfix smtpd",
                                                    "python3 -I -S -c pass"}
    assert all(f["median"] > 0 for f in scenarios["memory"]["figures"].values())
    silly = scenarios["silly"]
    assert silly["deferred"] == DEFERRED and set(silly["figures"]) == {"0 deferred", f"{DEFERRED} deferred"}
    # the table on stdout carries the same figures, and the chart was drawn
    table = done.stdout.decode()
    assert "ratio pyqmail/postfix" in table and "results: " + os.path.join(out, name) in table
    assert "CPU per message (ms, median): pyqmail " in table
    (png,) = [n for n in os.listdir(out) if n.endswith(".png")]
    with open(os.path.join(out, png), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # everything it started is gone: no Postfix (its cwd is the private queue), tcpserver,
    # qmail-start tree or smtp-sink of its own, no benchmark users, no temporary tree
    left = [p for p in processes() - before if out in p[1] or p[2].startswith(out)]
    assert left == []
    assert [n for n in os.listdir(out) if n.startswith("pyqmail-bench-")] == []
    with open("/etc/passwd") as f:
        assert [line for line in f if ":" + out in line] == []
