"""qmail-rspawn: run remote deliveries for qmail-send (spec/remote.md §2,
spec/send.md §7).

fd 0: commands `SLOT` `N/ID\\0` `SENDER\\0` `RECIPIENT\\0`; fd 1: the concurrency
byte at start, then per delivery `SLOT` + `K`/`Z`/`D` + text + `\\0`, in
completion order.  Each delivery is a forked child that runs qmail-remote's
code in-process (renamed qmail-remote), or execs `$QMAILREMOTE` when that is
set (notqmail 1.08).
"""
import _signal
import os
import signal
import sys

from pyqmail import auto, environ, errors, proctitle, qdns, qmail_remote, spawn, tcpto

READ_LIMIT = 1 << 20   # a child's output beyond this is read and dropped; qmail-remote
                       # writes at most a few kB, and qmail-send keeps only 10000 bytes

CRASHED = b"Zqmail-remote crashed.\n"
RUN_TEMP = b"ZUnable to run qmail-remote.\n"
RUN_PERM = b"DUnable to run qmail-remote.\n"
NO_OUTPUT = b"Zqmail-remote produced no output.\n"


def report(status: int, out: bytes) -> bytes:
    """qmail-rspawn's report(): the `K`/`Z`/`D` text for a child's exit status
    and output (spec/remote.md §2.4)."""
    if os.WIFSIGNALED(status):
        return CRASHED
    code = os.waitstatus_to_exitcode(status)
    if code == 111:
        return RUN_TEMP
    if code != 0:
        return RUN_PERM
    if not out:
        return NO_OUTPUT
    result = -1
    j = 0
    k = out.find(b"\0")
    while k >= 0:
        first = out[j:j + 1]
        if first == b"K":
            result = 1
            break
        if first == b"Z":
            result = 0
            break
        if first == b"D":
            break
        j = k + 1
        k = out.find(b"\0", j)
    letter = result
    if out[:1] == b"s":
        letter = 0
    elif out[:1] == b"h":
        letter = -1
    text = [b"DZK"[letter + 1:letter + 2]]
    nul = out.find(b"\0", 1)
    if nul >= 0:
        text.append(out[1:nul])
        k = nul + 1
        if result <= letter and k < len(out) and out[k:k + 1] in (b"Z", b"D", b"K"):
            end = out.find(b"\0", k)
            text.append(out[k + 1:] if end < 0 else out[k + 1:end])
    return b"".join(text)


class RemoteSpawner(spawn.Spawner):
    """spawn.c with qmail-rspawn's child and report."""

    def __init__(self, env: dict[bytes, bytes]):
        super().__init__()
        self.env = env
        self.qmailremote = env.get(b"QMAILREMOTE") or None
        self.title = proctitle.Title()

    def child(self, message_fd, report_fd, sender, recipient, at) -> int:
        """qmail-remote HOST SENDER RECIPIENT in this process (renamed
        qmail-remote), or $QMAILREMOTE exec'd; message on fd 0, pipe on 1 and 2."""
        argv = [b"qmail-remote", recipient[at + 1:], sender, recipient]
        _signal.signal(signal.SIGCHLD, _signal.SIG_DFL)   # not signal's wrapper (qmail-tcpsrv)
        spawn.into_child_fds(message_fd, report_fd)
        if self.qmailremote is not None:
            try:
                os.execvpe(self.qmailremote, [self.qmailremote] + argv[1:], self.env)
            except OSError as e:
                return 111 if errors.is_temporary(e) else 100
        proctitle.rename(self.title, argv)   # comm and argv[0]: qmail-remote
        return qmail_remote.run(argv, self.env, 0, 1)

    def report(self, wstat: int, output: bytes) -> bytes:
        return report(wstat, output)

    def add_output(self, output: bytes, data: bytes) -> bytes:
        room = READ_LIMIT - len(output)
        return output + data[:room] if room > 0 else output


def run(argv: list[bytes], env: dict[bytes, bytes]) -> int:
    """qmail-rspawn's main(); the exit code."""
    try:
        os.chdir(auto.QMAIL_HOME)
        os.chdir(b"queue/mess")
    except OSError:
        return 111
    try:
        os.fstat(2)
    except OSError:
        # qmail-start leaves fd 2 closed; hold it so no pipe of ours lands there
        os.open(os.devnull, os.O_WRONLY)
    qdns.preload()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    # every start of qmail-send forgets all timeouts
    tcpto.clean(b"../lock/tcpto")
    tcpto.clean(b"../lock/tcpto6")
    spawner = RemoteSpawner(env)
    spawner.write(bytes((auto.SPAWN,)))
    return spawner.loop()


def main() -> None:
    sys.exit(run([os.fsencode(a) for a in sys.argv], environ.original()))
