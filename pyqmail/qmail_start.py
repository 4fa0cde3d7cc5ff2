"""qmail-start: set up qmail-send, qmail-lspawn, qmail-rspawn, qmail-clean, the
logger and pyqmail's queue service, with qmail's pipes (spec/start-and-logs.md §1).

    qmail-start [ defaultdelivery [ logger [ arg ... ] ] ]

Prints nothing: every failure is exit 111.  On success this process becomes
qmail-send (exec, same pid); every other process is its child.  It stays in
the foreground, as qmail's does; with QMAILSTART_DETACH=1 in its environment
(a boot script's choice, e.g. `env - PATH=... QMAILSTART_DETACH=1 qmail-start
...`) it detaches first.
"""
import os
import signal
import sys

from pyqmail import auto, environ, prot


def spawn(program: bytes, argv: list[bytes], env: dict[bytes, bytes], fds: dict[int, int],
          close: list[int], uid: int | None = None, gid: int | None = None, groups=None) -> int:
    """fork; in the child drop to uid/gid, put fds in place, close the rest, execvp."""
    pid = os.fork()
    if pid == 0:
        try:
            if uid is not None:
                prot.drop(uid, gid, groups)
            for target, source in fds.items():
                os.dup2(source, target, inheritable=True)
            for fd in close:
                if fd not in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execvpe(program, argv, env)
        except BaseException:
            pass
        os._exit(111)
    return pid


def run(argv: list[bytes]) -> int:
    env = environ.original()   # without QMAILSTART_DETACH once detach() removed it
    os.chdir(b"/")
    os.umask(0o077)
    qmail = auto.GID_QMAIL
    os.setgroups([qmail])
    os.setgid(qmail)
    # keep 0-6 occupied so that new pipes land above 6
    for fd in range(2, 7):
        os.dup2(0, fd, inheritable=True)
    args = argv[1:]
    default_delivery = b"./Mailbox"
    if args:
        default_delivery = args.pop(0)
    if args:
        log_r, log_w = os.pipe()
        spawn(args[0], args, env, {0: log_r}, [log_w, log_r, 2, 3, 4, 5, 6],
              auto.UID_QMAILL, auto.GID_NOFILES)
        os.close(log_r)
        os.dup2(log_w, 1, inheritable=True)
        os.close(log_w)
    pipes = [os.pipe() for _ in range(6)]
    every = [fd for p in pipes for fd in p] + [2, 3, 4, 5, 6]
    (p1r, p1w), (p2r, p2w), (p3r, p3w), (p4r, p4w), (p5r, p5w), (p6r, p6w) = pipes
    spawn(b"qmail-lspawn", [b"qmail-lspawn", default_delivery], env, {0: p1r, 1: p2w}, every)
    spawn(b"qmail-rspawn", [b"qmail-rspawn"], env, {0: p3r, 1: p4w}, every,
          auto.UID_QMAILR, qmail)
    spawn(b"qmail-clean", [b"qmail-clean"], env, {0: p5r, 1: p6w}, every, auto.UID_QMAILQ, qmail)
    # pyqmail's queue service: on no pipe of qmail's; its complaints go to the log
    devnull = os.open(b"/dev/null", os.O_RDONLY)
    spawn(b"qmail-queued", [b"qmail-queued", b"-p"], env, {0: devnull, 1: 1, 2: 1}, every + [devnull],
          auto.UID_QMAILQ, qmail)
    os.close(devnull)
    prot.drop(auto.UID_QMAILS, qmail)
    for target, source in ((0, 1), (1, p1w), (2, p2r), (3, p3w), (4, p4r), (5, p5w), (6, p6r)):
        os.dup2(source, target, inheritable=True)
    for fd in [fd for p in pipes for fd in p]:
        os.close(fd)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.execvpe(b"qmail-send", [b"qmail-send"], env)
    return 111


def detach() -> None:
    """QMAILSTART_DETACH set (by a boot script): become a daemon with
    python-daemon (double fork, new session, no controlling tty, cwd /, umask
    077), keeping fds 0 and 1 (the log destination) and leaving every signal
    disposition alone; the variable is removed so no child ever sees it."""
    import daemon
    del os.environ["QMAILSTART_DETACH"]
    context = daemon.DaemonContext(working_directory="/", umask=0o077, detach_process=True,
                                   prevent_core=False, signal_map={},
                                   files_preserve=[0, 1], stdin=sys.stdin, stdout=sys.stdout, stderr=None)
    context.open()


def main() -> None:
    try:
        if os.environ.get("QMAILSTART_DETACH"):
            detach()
        code = run([os.fsencode(a) for a in sys.argv])
    except BaseException:
        code = 111
    os._exit(code)
