"""A qmail-send under test: the real qmail-send, qmail-clean and queue service of
a temporary installation, with the test playing qmail-lspawn and qmail-rspawn
over their pipes (spec/send.md §7), so every report is scripted."""
import grp
import os
import re
import select
import signal
import time

from conftest import uid
from queueutil import QueueService


class SendHarness:
    def __init__(self, home: str, spawn_limit=(120, 120), greet=True):
        self.home = home
        self.service = QueueService(home).start()
        self.log_r, log_w = os.pipe()
        l1r, l1w = os.pipe()   # qmail-send fd 1 -> us (local commands)
        l2r, l2w = os.pipe()   # us -> qmail-send fd 2
        r3r, r3w = os.pipe()
        r4r, r4w = os.pipe()
        c5r, c5w = os.pipe()
        c6r, c6w = os.pipe()
        qmail_gid = grp.getgrnam("qmail").gr_gid
        self.clean_pid = self._spawn([os.path.join(home, "bin", "qmail-clean")], {0: c5r, 1: c6w},
                                     uid("qmailq"), qmail_gid)
        self.pid = self._spawn([os.path.join(home, "bin", "qmail-send")],
                               {0: log_w, 1: l1w, 2: l2r, 3: r3w, 4: r4r, 5: c5w, 6: c6r},
                               uid("qmails"), qmail_gid)
        for fd in (log_w, l1w, l2r, r3w, r4r, c5r, c5w, c6r, c6w):
            os.close(fd)
        self.cmd = [l1r, r3r]
        self.rep = [l2w, r4w]
        self.spawn_limit = spawn_limit
        if greet:
            self.greet()
        self.log = b""
        self.cmdbuf = [b"", b""]

    def greet(self):
        """The spawners' greeting bytes (send.md §7.1)."""
        for fd, limit in zip(self.rep, self.spawn_limit):
            os.write(fd, bytes((limit,)))

    @staticmethod
    def _spawn(argv, fds, as_uid, as_gid):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([as_gid])
                os.setgid(as_gid)
                os.setuid(as_uid)
                for target, source in fds.items():
                    os.dup2(source, 200 + target, inheritable=True)
                for target in fds:
                    os.dup2(200 + target, target, inheritable=True)
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        return pid

    def read_log_until(self, pattern: bytes, timeout=15.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.log, re.M):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.log_r], [], [], left)[0]:
                raise AssertionError(f"log has no {pattern!r}:\n{self.log.decode(errors='replace')}")
            data = os.read(self.log_r, 65536)
            if not data:
                raise AssertionError(f"log ended without {pattern!r}:\n{self.log.decode()}")
            self.log += data
        return self.log

    def command(self, channel: int, timeout=15.0):
        """(slot, message path, sender, recipient) of the next command."""
        deadline = time.monotonic() + timeout
        while self.cmdbuf[channel].count(b"\0") < 3:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.cmd[channel]], [], [], left)[0]:
                while select.select([self.log_r], [], [], 0.1)[0]:
                    data = os.read(self.log_r, 65536)
                    if not data:
                        break
                    self.log += data
                raise AssertionError("no command; log:\n" + self.log.decode(errors="replace"))
            self.cmdbuf[channel] += os.read(self.cmd[channel], 65536)
        buf = self.cmdbuf[channel]
        slot = buf[0]
        path, sender, rcpt, rest = buf[1:].split(b"\0", 3)
        self.cmdbuf[channel] = rest
        return slot, path, sender, rcpt

    def report(self, channel: int, slot: int, code: bytes, text: bytes):
        os.write(self.rep[channel], bytes((slot,)) + code + text + b"\0")

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            try:
                data = os.read(self.log_r, 65536) if select.select([self.log_r], [], [], 0.05)[0] else b""
                self.log += data
            except OSError:
                pass
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        for fd in self.cmd + self.rep:
            try:
                os.close(fd)
            except OSError:
                pass
        os.waitpid(self.clean_pid, 0)
        while select.select([self.log_r], [], [], 0)[0]:
            data = os.read(self.log_r, 65536)
            if not data:
                break
            self.log += data
        os.close(self.log_r)
        self.service.stop()
