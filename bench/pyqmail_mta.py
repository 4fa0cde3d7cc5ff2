"""pyqmail for the benchmark: installed into a temporary QMAIL_HOME with the real
uids (as tests/conftest.py install() does), the qmail-start tree delivering to
./Maildir/, and qmail-smtpd under the real tcpserver on a loopback port."""
import grp
import os
import pwd
import signal
import socket
import subprocess
import time

PYTHON = "/usr/bin/python3"


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("%s: not true after %.0f s" % (what, timeout))
        time.sleep(0.01)


def children(pid: int) -> dict[str, list[int]]:
    """comm -> pids of pid and every process below it."""
    out: dict[str, list[int]] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                kids = [int(x) for x in f.read().split()]
            with open("/proc/%d/comm" % p) as f:
                out.setdefault(f.read().strip(), []).append(p)
        except OSError:
            continue
        todo += kids
    return out


class Pyqmail:
    def __init__(self, src: str, base: str, domain: str, port: int, relay_domain: str,
                 relay_port: int, dead_domain: str, dead_port: int):
        self.src = src
        self.home = os.path.join(base, "qmail")
        self.base = base
        self.domain = domain
        self.port = port
        done = subprocess.run([PYTHON, "-m", "pyqmail.install", "setup", self.home, src,
                               os.path.join(src, "build", "deps"), PYTHON],
                              cwd=src, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError("pyqmail install failed: %s" % done.stderr.decode(errors="replace"))
        subprocess.run([self.bin("config-fast"), domain], check=True, capture_output=True)
        self.control("smtproutes", "%s:127.0.0.1:%d\n%s:127.0.0.1:%d\n"
                     % (relay_domain, relay_port, dead_domain, dead_port))
        rules = os.path.join(self.home, "control", "tcp.smtp")
        with open(rules, "w") as f:
            f.write('127.:allow,RELAYCLIENT=""\n:allow\n')
        with open(rules) as f:
            subprocess.run(["tcprules", rules + ".cdb", rules + ".tmp"], stdin=f, check=True)
        self.send_log = os.path.join(base, "qmail-send.log")
        self.tree = None
        self.server = None
        self.queued = None

    def bin(self, name: str) -> str:
        return os.path.join(self.home, "bin", name)

    def control(self, name: str, text: str) -> None:
        with open(os.path.join(self.home, "control", name), "w") as f:
            f.write(text)

    def queue_socket(self) -> str:
        return os.path.join(self.home, "queue", "lock", "qmail-queued")

    def start_tree(self) -> None:
        """qmail-start ./Maildir/, its log into a file."""
        with open(self.send_log, "ab") as log:
            self.tree = subprocess.Popen([self.bin("qmail-start"), "./Maildir/"], cwd="/",
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env={"PATH": "%s/bin:/usr/bin:/bin" % self.home})
        wait_until(lambda: self.tree.poll() is not None or (
            os.path.exists(self.queue_socket()) and self.connectable()), 30, "qmail-start tree up")
        if self.tree.poll() is not None:
            raise RuntimeError("qmail-start exited; see %s" % self.send_log)

    def connectable(self) -> bool:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(self.queue_socket())
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop_tree(self) -> None:
        if self.tree is not None and self.tree.poll() is None:
            pids = [p for ps in children(self.tree.pid).values() for p in ps]
            self.tree.send_signal(signal.SIGTERM)
            try:
                self.tree.wait(60)
            except subprocess.TimeoutExpired:
                for p in pids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                self.tree.wait()
            for p in pids:
                deadline = time.monotonic() + 20
                while os.path.exists("/proc/%d" % p) and time.monotonic() < deadline:
                    try:
                        with open("/proc/%d/stat" % p) as f:
                            if f.read().split(")")[-1].split()[0] == "Z":
                                break
                    except OSError:
                        break
                    time.sleep(0.02)
        self.tree = None

    def start_queued(self) -> None:
        """The queue service alone (no qmail-send): the queue-floor scenario."""
        with open(self.send_log, "ab") as log:
            self.queued = subprocess.Popen([self.bin("qmail-queued")], cwd="/", stdin=subprocess.DEVNULL,
                                           stdout=log, stderr=log, env={"PATH": "/usr/bin:/bin"})
        wait_until(lambda: self.queued.poll() is not None or self.connectable(), 30, "qmail-queued up")
        if self.queued.poll() is not None:
            raise RuntimeError("qmail-queued exited; see %s" % self.send_log)

    def stop_queued(self) -> None:
        if self.queued is not None and self.queued.poll() is None:
            self.queued.terminate()
            try:
                self.queued.wait(60)
            except subprocess.TimeoutExpired:
                self.queued.kill()
                self.queued.wait()
        self.queued = None

    def start_smtpd(self) -> None:
        rules = os.path.join(self.home, "control", "tcp.smtp.cdb")
        argv = ["tcpserver", "-R", "-H", "-l", self.domain, "-x", rules, "-c", "100",
                "-u", str(pwd.getpwnam("qmaild").pw_uid), "-g", str(grp.getgrnam("nofiles").gr_gid),
                "127.0.0.1", str(self.port), self.bin("qmail-smtpd")]
        with open(os.path.join(self.base, "tcpserver.log"), "ab") as log:
            self.server = subprocess.Popen(argv, cwd="/", stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=log, env={"PATH": "/usr/bin:/bin"})

        def up():
            if self.server.poll() is not None:
                return True
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_until(up, 30, "tcpserver up")
        if self.server.poll() is not None:
            raise RuntimeError("tcpserver exited (port %d busy?)" % self.port)

    def stop_smtpd(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(10)
        self.server = None

    def queue_files(self) -> int:
        """Entries left in todo/ and info/ (0 once every message is done)."""
        q = os.path.join(self.home, "queue")
        n = len(os.listdir(os.path.join(q, "todo")))
        for part in os.listdir(os.path.join(q, "info")):
            n += len(os.listdir(os.path.join(q, "info", part)))
        return n

    def stop(self) -> None:
        self.stop_smtpd()
        self.stop_queued()
        self.stop_tree()
