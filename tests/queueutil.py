"""Helpers for tests that run the queue service of a temporary installation."""
import os
import signal
import subprocess

from conftest import in_child, wait_for
from pyqmail import prot, qmail


def submit_as(home: str, as_uid: int, as_gid: int, message: bytes, envelope: list[bytes],
              env=None, effective_uid: int | None = None) -> tuple[bytes, int]:
    """Queue through pyqmail.qmail in a child running as as_uid (with
    effective_uid as its effective and saved uid, like a setuid program,
    when given); (result, qp)."""
    def body():
        if effective_uid is None:
            prot.drop(as_uid, as_gid)
        else:
            os.setgroups([])
            os.setresgid(as_gid, as_gid, as_gid)
            os.setresuid(as_uid, effective_uid, effective_uid)
        qq = qmail.Qmail(home.encode(), env)
        qq.open()
        qq.put(message)
        qq.from_(envelope[0])
        for rcpt in envelope[1:]:
            qq.to(rcpt)
        result = qq.close()
        return b"%d %s" % (qq.qp, result)
    qp, _, result = in_child(body).partition(b" ")
    return result, int(qp)


class QueueService:
    """qmail-queued of one QMAIL_HOME, started as root (it drops to qmailq)."""

    def __init__(self, home: str):
        self.home = home
        self.socket = os.path.join(home, "queue", "lock", "qmail-queued")
        self.proc = None

    def start(self):
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.proc = subprocess.Popen([os.path.join(self.home, "bin", "qmail-queued")],
                                     stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None)
        assert self.proc.poll() is None, self.proc.stderr.read()
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def stop(self):
        self.kill(signal.SIGTERM)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()


def queue_files(home: str) -> dict[str, list[str]]:
    """Every file in the directories qmail-queue writes."""
    q = os.path.join(home, "queue")
    out = {"pid": sorted(os.listdir(os.path.join(q, "pid"))),
           "intd": sorted(os.listdir(os.path.join(q, "intd"))),
           "todo": sorted(os.listdir(os.path.join(q, "todo")))}
    mess = []
    for n in os.listdir(os.path.join(q, "mess")):
        mess += [f"{n}/{x}" for x in os.listdir(os.path.join(q, "mess", n))]
    out["mess"] = sorted(mess)
    return out


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
