"""sendmail: the sendmail command line for MUAs and scripts, mapped onto
qmail-inject, qmail-smtpd (-bs) and qmail-qread (-bp, mailq) (spec/inject.md §6).

qmail's sendmail execs QMAIL_HOME/bin/qmail-inject.  Where that file is still
this installation's wrapper, this process runs qmail-inject's code itself
instead, renamed to it first (comm and command line, as an exec would show
it): the same pid, environment, descriptors and exit code, without a second
interpreter start (6 ms of CPU).  Anything else there is exec'd."""
import os
import sys

from pyqmail import auto, environ, errors
from pyqmail.sgetopt import Getopt

USAGE = b"sendmail: usage: sendmail [ -t ] [ -fsender ] [ -Fname ] [ -bp ] [ -bs ] [ arg ... ]"

# -bs with no PROTO: what tcpserver would have said about a local client
SMTPD_ENV = ((b"RELAYCLIENT", b""), (b"DATABYTES", b"0"), (b"PROTO", b"TCP"),
             (b"TCPLOCALIP", b"127.0.0.1"), (b"TCPLOCALHOST", b"localhost"),
             (b"TCPREMOTEIP", b"127.0.0.1"), (b"TCPREMOTEHOST", b"localhost"),
             (b"TCPREMOTEINFO", b"sendmail-bs"))


class Exit(Exception):
    """Leave with a code after an optional line on fd 2."""

    def __init__(self, code: int, text: bytes | None = None):
        super().__init__(code)
        self.code = code
        self.text = text


def fatal(text: bytes, code: int) -> Exit:
    return Exit(code, b"sendmail: fatal: " + text)


def execute(argv: list[bytes], env: dict[bytes, bytes], what: bytes) -> None:
    """exec a program of QMAILHOME/bin (cwd is QMAILHOME); return only by raising."""
    try:
        os.execve(argv[0], argv, env)
    except OSError:
        pass
    raise fatal(b"unable to run " + what, 111)


def mailq(env: dict[bytes, bytes]) -> None:
    execute([b"bin/qmail-qread"], env, b"qmail-qread")


def smtpd(env: dict[bytes, bytes]) -> None:
    if b"PROTO" not in env:
        env.update(SMTPD_ENV)
    execute([b"bin/qmail-smtpd"], env, b"qmail-smtpd")


def do_sender(env: dict[bytes, bytes], sender: bytes) -> None:
    """[net] the generated From follows -f: QMAILUSER/QMAILHOST from the address."""
    for name in (b"QMAILNAME", b"MAILNAME", b"NAME", b"QMAILHOST", b"MAILHOST"):
        env.pop(name, None)
    at = sender.rfind(b"@")
    if at < 0:
        env[b"QMAILUSER"] = sender
        return
    env[b"QMAILHOST"] = sender[at + 1:]
    env[b"QMAILUSER"] = sender[:at]


def sendmail(argv: list[bytes], env: dict[bytes, bytes], qmail_home: bytes, own_path: bytes) -> None:
    try:
        os.chdir(qmail_home)
    except OSError:
        raise fatal(b"unable to switch to qmail home directory", 111) from None
    flagh = False
    sender = None
    opts = Getopt(argv, b"vimte:f:p:o:B:F:EJxb:")
    while (opt := opts.next()) is not None:
        if opt == b"t":
            flagh = True
        elif opt == b"f":
            sender = opts.optarg
        elif opt == b"F":
            env[b"MAILNAME"] = opts.optarg
        elif opt in (b"B", b"p", b"v", b"i", b"x", b"m", b"e", b"o"):
            pass  # qmail has one delivery mode, one error mode, reads to EOF
        elif opt in (b"E", b"J"):
            opts.optpos = len(argv[opts.optind])  # skip an attached argument
        elif opt == b"b":
            mode = opts.optarg[:1]
            if mode == b"p":
                mailq(env)
            elif mode == b"s":
                smtpd(env)
            elif mode != b"m":
                raise Exit(100, USAGE)
        else:
            raise Exit(100, USAGE)
    args = argv[opts.optind:]
    if opts.progname == b"mailq":
        mailq(env)
    if opts.progname == b"newaliases":
        raise fatal(b"please use fastforward/newaliases instead", 100)
    qiargv = [b"bin/qmail-inject", b"-H" if flagh else b"-a"]
    if sender is not None:
        qiargv += [b"-f", sender]
        do_sender(env, sender)
    qiargv.append(b"--")
    qiargv += args
    inject(qiargv, env, qmail_home, own_path)


def inject(qiargv: list[bytes], env: dict[bytes, bytes], qmail_home: bytes, own_path: bytes) -> None:
    """qmail-inject QIARGV: in this process when bin/qmail-inject is our
    wrapper and this process can rename itself, else exec'd."""
    from pyqmail import proctitle, wrapper
    if wrapper.module_name(qiargv[0], own_path, "sendmail") == "qmail_inject" \
            and proctitle.rename_through_proc(qiargv):
        from pyqmail import qmail_inject
        raise Exit(qmail_inject.run(qiargv, env, qmail_home))
    execute(qiargv, env, b"qmail-inject")


def run(argv: list[bytes], env: dict[bytes, bytes], qmail_home: bytes, own_path: bytes = b"") -> int:
    """Act as sendmail(8) does (own_path: the wrapper this process was started
    as); return only when no program could be exec'd."""
    try:
        sendmail(argv, env, qmail_home, own_path)
    except Exit as e:
        if e.text is not None:
            errors.write_line(2, e.text)
        return e.code
    except MemoryError:
        errors.write_line(2, b"sendmail: fatal: out of memory")
        return 111
    return 111


def main() -> None:
    # the environment as the caller gave it, without Python's LC_CTYPE=C.UTF-8;
    # the wrapper's own path taken before sendmail() changes the directory
    argv = [os.fsencode(a) for a in sys.argv]
    own_path = os.path.abspath(argv[0]) if argv and argv[0] else b""
    sys.exit(run(argv, environ.original(), auto.QMAIL_HOME, own_path))
