"""Local delivery rate: qmail-lspawn's resident qmail-locals, its child per
delivery running qmail-local's code, and exec'ing bin/qmail-local, in the same
run (issue 6's and issue 10's closing notes).

    sudo python3 bench/lspawn_rate.py [--count 2000] [--concurrency 10] [--rounds 4] [--getpw]

Runs as root.  Installs pyqmail from this checkout into a temporary QMAIL_HOME
(run `make deps` first), makes a throw-away user with a Maildir, puts one
message into queue/mess/, and drives the real bin/qmail-lspawn over its pipes
as qmail-send does, keeping --concurrency deliveries in flight (qmail-send's
default concurrencylocal is 10), in rounds alternating between the paths:

  resident     bin/qmail-lspawn as installed: the user's resident qmail-local
               (a child that has become the user) delivers one message after
               another.
  fork         the same qmail-lspawn code without residents (every command
               takes the fallback path): each delivery is a fork that becomes
               the user and runs qmail-local's code in the same interpreter.
  exec         the fork path, except that the delivery child, at the point
               where it would call qmail-local's code, execs bin/qmail-local
               with the same argv, fds (0 message, 1 and 2 the report pipe),
               working directory and environment, as qmail 1.03's qmail-lspawn
               does.

The user is found through users/cdb (qmail-newu), so all paths do the same
lookup and differ only in how qmail-local runs; --getpw leaves
users/cdb out, so every delivery also asks qmail-getpw (qmail-lspawn keeps
one resident), as on an installation without users/assign.  Each delivery must report `K`; the Maildir
must hold every message.  Prints messages/s for each and the ratios.
"""
import argparse
import os
import pwd
import select
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
DEPS = os.path.join(SRC, "build", "deps")
MESSAGE = (b"Received: (qmail 1 invoked by uid 0); 1 Jan 2026 00:00:00 -0000\n"
           b"From: bench@example.org\nSubject: lspawn rate\n\n" + b"x" * 60 + b"\n")
SENDER = b"bench@example.org"
WARMUP = 20

# Run by the installed interpreter for the fork path: qmail-lspawn's own module
# with no command short enough for a resident.
FORK_SPAWNER = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from pyqmail import qmail_lspawn
qmail_lspawn.JOB_MAX = -1
sys.argv = ["qmail-lspawn"] + sys.argv[2:]
qmail_lspawn.main()
"""

# ... and for the exec path, with the delivery child's call of qmail-local's
# code replaced by an exec.
EXEC_SPAWNER = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from pyqmail import qmail_lspawn
qmail_lspawn.JOB_MAX = -1

class ExecLocal:
    @staticmethod
    def run(argv, env, msg_fd, report_fd, out_fd=None):
        # delivery_child has put the message on 0 and the report pipe on 1 and 2,
        # chdir'd to QMAIL_HOME and dropped to the user: qmail-lspawn.c's execv
        try:
            os.execve(b"bin/qmail-local", argv, env)
        except OSError:
            os._exit(qmail_lspawn.QLX_EXECSOFT)

qmail_lspawn.qmail_local = ExecLocal
sys.argv = ["qmail-lspawn"] + sys.argv[2:]
qmail_lspawn.main()
"""


class LSpawn:
    """qmail-lspawn on its pipes: commands in, `SLOT` `K|Z|D` TEXT NUL reports out."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.buf = b""
        self.slots = self.read_greeting()

    def fill(self) -> None:
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        if not ready:
            raise SystemExit("lspawn_rate: qmail-lspawn said nothing for 60 s")
        data = os.read(self.proc.stdout.fileno(), 65536)
        if not data:
            raise SystemExit("lspawn_rate: qmail-lspawn closed its output")
        self.buf += data

    def read_greeting(self) -> int:
        while not self.buf:
            self.fill()
        slots, self.buf = self.buf[0], self.buf[1:]
        return slots

    def send(self, slot: int, messid: bytes, recipient: bytes) -> None:
        self.proc.stdin.write(bytes((slot,)) + messid + b"\0" + SENDER + b"\0" + recipient + b"\0")
        self.proc.stdin.flush()

    def report(self) -> tuple[int, bytes]:
        while True:
            end = self.buf.find(b"\0", 1)
            if len(self.buf) > 1 and end > 0:
                slot, text = self.buf[0], self.buf[1:end]
                self.buf = self.buf[end + 1:]
                return slot, text
            self.fill()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)
        self.proc.stdout.close()


def deliver(spawner: LSpawn, count: int, concurrency: int, messid: bytes, recipient: bytes) -> float:
    """count deliveries, at most concurrency at a time; the seconds they took."""
    free = list(range(min(concurrency, spawner.slots)))
    sent = done = 0
    start = time.monotonic()
    while done < count:
        while free and sent < count:
            spawner.send(free.pop(), messid, recipient)
            sent += 1
        slot, text = spawner.report()
        if not text.startswith(b"K"):
            raise SystemExit("lspawn_rate: delivery failed: %r" % text)
        free.append(slot)
        done += 1
    return time.monotonic() - start


def run_modes(argvs, env, count, rounds, concurrency, messid, recipient) -> list[float]:
    """Both spawners side by side; the deliveries in rounds, alternating which
    goes first, so a change in the machine's load hits both alike."""
    spawners = []
    try:
        for argv in argvs:
            spawners.append(LSpawn(argv, env))
            deliver(spawners[-1], WARMUP, concurrency, messid, recipient)
        seconds = [0.0] * len(spawners)
        for r in range(rounds):
            share = count // rounds + (1 if r < count % rounds else 0)
            order = range(len(spawners)) if r % 2 == 0 else reversed(range(len(spawners)))
            for i in order:
                seconds[i] += deliver(spawners[i], share, concurrency, messid, recipient)
        return seconds
    finally:
        for spawner in spawners:
            spawner.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4,
                        help="split the count into rounds, alternating the two paths")
    parser.add_argument("--getpw", action="store_true",
                        help="no users/cdb: every delivery also asks qmail-getpw (qmail-lspawn's resident one)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("lspawn_rate: run as root (qmail-lspawn becomes the user)")
    if args.count < 1 or args.rounds < 1 or not 1 <= args.concurrency <= 255:
        raise SystemExit("lspawn_rate: --count and --rounds at least 1, --concurrency 1..255")
    if not os.path.isdir(DEPS):
        raise SystemExit("lspawn_rate: run make deps first (%s is missing)" % DEPS)

    base = tempfile.mkdtemp(prefix="pyqmail-lspawn-rate-", dir="/var/tmp")
    os.chmod(base, 0o755)
    home = os.path.join(base, "qmail")
    name = "pqrate%d" % (os.getpid() % 100000)
    user_home = os.path.join(base, name)
    made_user = False
    try:
        done = subprocess.run([PYTHON, "-m", "pyqmail.install", "setup", home, SRC, DEPS, PYTHON],
                              cwd=SRC, capture_output=True)
        if done.returncode:
            raise SystemExit("lspawn_rate: install failed: " + done.stderr.decode())
        os.mkdir(user_home)
        subprocess.run(["useradd", "--no-create-home", "--home-dir", user_home, "--user-group",
                        "--shell", "/bin/sh", name], check=True, capture_output=True)
        made_user = True
        pw = pwd.getpwnam(name)
        maildir = os.path.join(user_home, "Maildir")
        for d in (user_home, maildir, *(os.path.join(maildir, s) for s in ("tmp", "new", "cur"))):
            os.makedirs(d, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, 0o700 if d != user_home else 0o755)
        if not args.getpw:
            with open(os.path.join(home, "users", "assign"), "wb") as f:
                f.write(b"=%s:%s:%d:%d:%s:::\n.\n" % (name.encode(), name.encode(), pw.pw_uid,
                                                     pw.pw_gid, user_home.encode()))
            subprocess.run([os.path.join(home, "bin", "qmail-newu")], check=True, capture_output=True)

        # one message in queue/mess/0/, named by its inode and owned by qmailq
        mess = os.path.join(home, "queue", "mess", "0")
        tmp = os.path.join(mess, "new")
        with open(tmp, "wb") as f:
            f.write(MESSAGE)
        inode = os.stat(tmp).st_ino
        os.rename(tmp, os.path.join(mess, str(inode)))
        os.chown(os.path.join(mess, str(inode)), pwd.getpwnam("qmailq").pw_uid, -1)
        os.chmod(os.path.join(mess, str(inode)), 0o644)
        messid = b"0/%d" % inode
        recipient = b"%s@bench.example" % name.encode()

        env = {"PATH": f"{home}/bin:/usr/bin:/bin"}
        modes = [
            ("resident (qmail-local's code, one process per user)",
             [os.path.join(home, "bin", "qmail-lspawn"), "./Maildir/"]),
            ("fork (qmail-local's code in a child per delivery)",
             [PYTHON, "-IS", "-c", FORK_SPAWNER, os.path.join(home, "lib", "python"), "./Maildir/"]),
            ("exec bin/qmail-local (qmail 1.03's way)",
             [PYTHON, "-IS", "-c", EXEC_SPAWNER, os.path.join(home, "lib", "python"), "./Maildir/"]),
        ]
        seconds = run_modes([argv for _, argv in modes], env, args.count, args.rounds,
                            args.concurrency, messid, recipient)
        results = list(zip((label for label, _ in modes), seconds))
        delivered = len(os.listdir(os.path.join(maildir, "new")))
        expected = len(modes) * (args.count + WARMUP)
        if delivered != expected:
            raise SystemExit("lspawn_rate: %d messages in the Maildir, expected %d" % (delivered, expected))

        print("%d deliveries of %d bytes to one Maildir, concurrency %d, %d rounds, user lookup: %s"
              % (args.count, len(MESSAGE), args.concurrency, args.rounds,
                 "qmail-getpw (resident)" if args.getpw else "users/cdb"))
        for label, seconds in results:
            print("  %-52s %7.2f s  %8.1f msg/s" % (label, seconds, args.count / seconds))
        print("  resident / fork rate ratio: %.2f" % (results[1][1] / results[0][1]))
        print("  resident / exec rate ratio: %.2f" % (results[2][1] / results[0][1]))
    finally:
        if made_user:
            subprocess.run(["userdel", name], capture_output=True)
            subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
