"""qmail-local: deliver one message to one user as the .qmail files say
(spec/local.md §5, spec/maildir-mbox.md §2 and §4).

    qmail-local [ -nN ] user homedir local dash ext domain sender defaultdelivery

Runs as the recipient.  The message is fd 0 (seekable); the summary goes to
fd 1, failures to fd 2 (both the report pipe under qmail-lspawn).
"""
import _signal
import errno
import fcntl
import os
import re
import signal
import sys
import time

from pyqmail import auto, date822, environ, errors, quote, sgetopt
from pyqmail.errors import Permanent, Temporary

USAGE = b"qmail-local: usage: qmail-local [ -nN ] user homedir local dash ext domain sender aliasempty"

TEMP_NOMEM = b"Out of memory. (#4.3.0)"
TEMP_REWIND = b"Unable to rewind message. (#4.3.0)"
TEMP_CHILDCRASHED = b"Aack, child crashed. (#4.3.0)"
TEMP_SLOWLOCK = b"File has been locked for 30 seconds straight. (#4.3.0)"
ERR_LOOP = b"This message is looping: it already has my Delivered-To line. (#5.4.6)"
ERR_NOMAILBOX = b"Sorry, no mailbox here by that name. (#5.1.1)"
ERR_HOME_WRITABLE = b"Uh-oh: home directory is writable. (#4.7.0)"
ERR_HOME_STICKY = b"Home directory is sticky: user is editing his .qmail file. (#4.2.1)"
WARN_HOME_STICKY = b"Warning: home directory is sticky."
ERR_QMAIL_WRITABLE = b"Uh-oh: .qmail file is writable. (#4.7.0)"
ERR_BLANK = b"Uh-oh: first line of .qmail file is blank. (#4.2.1)"
ERR_XBIT_FILE = b"Uh-oh: .qmail has file delivery but has x bit set. (#4.7.0)"
ERR_XBIT_PROG = b"Uh-oh: .qmail has prog delivery but has x bit set. (#4.7.0)"

# maildir_child's exit codes -> qmail-local's text (spec/maildir-mbox.md §2)
MAILDIR_TEXT = {
    2: b"Unable to chdir to maildir. (#4.2.1)",
    3: b"Timeout on maildir delivery. (#4.3.0)",
    4: b"Unable to read message. (#4.3.0)",
}
MAILDIR_OTHER = b"Temporary error on maildir delivery. (#4.3.0)"

# spec/local.md §5.7: program exit codes that bounce the message
PERMANENT_PROGRAM_CODES = frozenset((100, 64, 65, 70, 76, 77, 78, 112))

DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")

CHUNK = 65536
LOCK_TIMEOUT = 30
MAILDIR_TIMEOUT = 86400


class Exit(Exception):
    """Stop qmail-local with this exit code and no text of its own (a program's
    exit code passed on: its output is the report)."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class SlowLock(Exception):
    """The 30-second alarm went off while waiting for an mbox lock."""


def myctime(t: float) -> bytes:
    """qmail's myctime(): `Www Mmm DD HH:MM:SS YYYY\\n` in UTC, day zero-padded."""
    tm = time.gmtime(t)
    return b"%s %s %02d %02d:%02d:%02d %d\n" % (DAYS[tm.tm_wday], date822.MONTHS[tm.tm_mon - 1], tm.tm_mday,
                                                tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_year)


FROM_LINE = re.compile(rb"^(?=>*From )", re.MULTILINE)


def from_quote(data: bytes) -> bytes:
    """gfrom(): a `>` before every line of data that starts `>*From ` (mboxrd)."""
    return FROM_LINE.sub(b">", data)


def rewind(fd: int) -> None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        raise Temporary(TEMP_REWIND) from None


def cstring(data: bytes) -> bytes:
    """What C sees of data: up to its first NUL."""
    return data.split(b"\0", 1)[0]


class ReadError(Exception):
    def __init__(self, error: OSError):
        super().__init__(error)
        self.error = error


def line_blocks(fd: int):
    """The message on fd in blocks of whole lines (each block ending in LF),
    then an unterminated last piece.  Time stays linear in the message however
    long a line is (ReadError on a read failure)."""
    pending = bytearray()
    while True:
        try:
            chunk = os.read(fd, CHUNK)
        except OSError as e:
            raise ReadError(e) from None
        if not chunk:
            if pending:
                yield bytes(pending)
            return
        scanned = len(pending)  # no LF before this
        pending += chunk
        end = pending.rfind(b"\n", scanned)
        if end >= 0:
            yield bytes(pending[:end + 1])
            del pending[:end + 1]


class Written:
    """How many maildir messages this process has written itself, for the
    middle of their names (spec/maildir-mbox.md §2.1): qmail forks a child per
    message and names it TIME.PID.HOST; a process that writes several names
    its first one so and the later ones TIME.PID_N.HOST, N = 2, 3, ..., the
    form maildir(5) gives for "several messages from one process".  Held by
    whoever runs qmail-local's code: one run() (a qmail-local process), or a
    resident qmail-local for all its deliveries."""

    def __init__(self):
        self.pid = 0
        self.count = 0

    def middle(self) -> bytes:
        pid = os.getpid()
        if pid != self.pid:
            self.pid = pid      # a forked child starts its own count
            self.count = 0
        self.count += 1
        return b"%d" % pid if self.count == 1 else b"%d_%d" % (pid, self.count)


class Job:
    """One qmail-local run: its arguments and the values derived from them."""

    def __init__(self, argv: list[bytes], written: Written | None = None):
        self.written = written or Written()
        options, rest, problem = sgetopt.getopt(argv, b"nN")
        if problem is not None:
            raise Permanent(problem.rstrip(b"\n") + b"\n" + USAGE)
        self.doit = True
        for opt, _ in options:
            self.doit = opt == b"N"
        if len(rest) != 8 or not rest[1].startswith(b"/"):
            raise Permanent(USAGE)
        (self.user, self.homedir, self.local, self.dash, self.ext,
         self.host, self.sender, self.aliasempty) = rest
        self.safeext = self.ext.lower().replace(b".", b":")
        recipient = self.local + b"@" + self.host
        self.recipient = recipient
        self.dtline = b"Delivered-To: " + recipient.replace(b"\n", b"_") + b"\n"
        self.rpline = b"Return-Path: <" + quote.quote2(self.sender).replace(b"\n", b"_") + b">\n"
        if self.sender:
            from_ = self.sender.replace(b" ", b"-").replace(b"\t", b"-").replace(b"\n", b"-")
        else:
            from_ = b"MAILER-DAEMON"
        self.ufline = b"From " + from_ + b" " + myctime(time.time())


def host_cut(host: bytes) -> bytes:
    """byte_rchr cut: host before its last `.`, unchanged without one."""
    at = host.rfind(b".")
    return host if at < 0 else host[:at]


def ext_next(ext: bytes) -> bytes:
    at = ext.find(b"-")
    return b"" if at < 0 else ext[at + 1:]


def environment(job: Job, env: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """qmail-local's env_put2 calls, in its order (spec/local.md §5.7)."""
    out = dict(env)
    out[b"HOST"] = job.host
    out[b"HOME"] = job.homedir
    out[b"USER"] = job.user
    out[b"LOCAL"] = job.local
    out[b"RECIPIENT"] = job.recipient
    out[b"DTLINE"] = job.dtline
    out[b"SENDER"] = job.sender
    out[b"RPLINE"] = job.rpline
    out[b"UFLINE"] = job.ufline
    out[b"EXT"] = job.ext
    out[b"EXT2"] = ext2 = ext_next(job.ext)
    out[b"EXT3"] = ext3 = ext_next(ext2)
    out[b"EXT4"] = ext_next(ext3)
    out[b"HOST2"] = host2 = host_cut(job.host)
    out[b"HOST3"] = host3 = host_cut(host2)
    out[b"HOST4"] = host_cut(host3)
    return out


def check_home(job: Job, err_fd: int) -> None:
    """checkhome(): no PATRN bits on ~; sticky ~ means the user is editing."""
    try:
        st = os.stat(b".")
    except OSError as e:
        raise Temporary(b"Unable to stat home directory: %s. (#4.3.0)" % errors.error_str(e)) from None
    if st.st_mode & auto.PATRN:
        raise Temporary(ERR_HOME_WRITABLE)
    if st.st_mode & 0o1000:
        if job.doit:
            raise Temporary(ERR_HOME_STICKY)
        errors.write_line(err_fd, WARN_HOME_STICKY)


def bouncexf(job: Job, msg_fd: int) -> None:
    """The loop check: a header line equal to our Delivered-To line bounces."""
    rewind(msg_fd)
    try:
        for block in line_blocks(msg_fd):
            # the last element of split() is what follows the block's final LF:
            # empty, or an unterminated last line, which is never compared
            for line in block.split(b"\n")[:-1]:
                if not line:
                    return  # the blank line
                if line + b"\n" == job.dtline:
                    raise Permanent(ERR_LOOP)
    except ReadError as e:
        raise Temporary(b"Unable to read message: %s. (#4.3.0)" % errors.error_str(e.error)) from None


def temp_qmail(name: bytes, e: OSError) -> Temporary:
    return Temporary(b"Unable to open %s: %s. (#4.3.0)" % (name, errors.error_str(e)))


def qme_exists(name: bytes) -> tuple[int, bool] | None:
    """qmeexists(): (fd, forward-only) when name is a usable regular file."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)  # open_read(): a FIFO must not hang us
    except OSError as e:
        if errors.is_temporary(e) or e.errno in (errno.EPERM, errno.EACCES):
            raise temp_qmail(name, e) from None
        return None
    except ValueError:  # a NUL in the name: C would see a shorter name
        return qme_exists(cstring(name))
    try:
        st = os.fstat(fd)
    except OSError as e:
        os.close(fd)
        raise temp_qmail(name, e) from None
    if (st.st_mode & 0o170000) == 0o100000:
        if st.st_mode & auto.PATRN:
            os.close(fd)
            raise Temporary(ERR_QMAIL_WRITABLE)
        return fd, bool(st.st_mode & 0o100)
    os.close(fd)
    return None


def qme_search(job: Job) -> tuple[int | None, bool, bytes | None]:
    """qmesearch(): the .qmail file (fd or None), its x bit, and DEFAULT."""
    base = b".qmail" + job.dash
    found = qme_exists(base + job.safeext)
    if found is not None:
        default = None
        if len(job.safeext) >= 7 and job.safeext.endswith(b"default"):
            default = job.ext[len(job.safeext) - 7:]
        return found[0], found[1], default
    for i in range(len(job.safeext), -1, -1):
        if i == 0 or job.safeext[i - 1:i] == b"-":
            found = qme_exists(base + job.safeext[:i] + b"default")
            if found is not None:
                return found[0], found[1], job.ext[i:]
    return None, False, None


def qme_ox(job: Job, suffix: bytes) -> bool:
    """qmeox(): does .qmail+dash+safeext+suffix exist (stat)?"""
    name = b".qmail" + job.dash + job.safeext + suffix
    try:
        os.stat(cstring(name))
    except OSError as e:
        if errors.is_temporary(e):
            raise temp_qmail(name, e) from None
        return False
    return True


def new_sender(job: Job) -> bytes:
    """NEWSENDER: the -owner address when .qmail-EXT-owner exists (§5.8)."""
    if job.sender and job.sender != b"#@[]" and qme_ox(job, b"-owner"):
        if qme_ox(job, b"-owner-default"):
            return job.local + b"-owner-@" + job.host + b"-@[]"
        return job.local + b"-owner@" + job.host
    return job.sender


def read_qmail_file(fd: int) -> bytes:
    """slurpclose(): the whole file; a read error reads as out of memory."""
    chunks = []
    try:
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        raise Temporary(TEMP_NOMEM) from None
    finally:
        os.close(fd)
    return b"".join(chunks)


# --- deliveries -----------------------------------------------------------

def fork_failed(reason: bytes) -> Temporary:
    return Temporary(b"Unable to fork: %s. (#4.3.0)" % reason)


def fork() -> int:
    """fork(), its failure a temporary one with qmail-local's text."""
    try:
        return os.fork()
    except OSError as e:
        raise fork_failed(errors.error_str(e)) from None


def wait_child(pid: int) -> int | None:
    """The child's exit code, None if it crashed."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return None
    return os.WEXITSTATUS(status)


class MaildirTimeout(Exception):
    """The maildir write's alarm, when it runs in qmail-local's own process."""


def maildir_child(job: Job, path: bytes, msg_fd: int, forked: bool = True) -> int:
    """maildir_child(): tmp/TIME.PID.HOST (see Written), fsync, link into new/ (§2); the
    code qmail's child exits with.  Not forked, the alarm raises MaildirTimeout
    (after removing the tmp file) instead of exiting."""
    tmpname = b""

    def alarmed(signum, frame):
        if tmpname:
            try:
                os.unlink(tmpname)
            except OSError:
                pass
        if not forked:
            raise MaildirTimeout()
        os._exit(3)

    _signal.signal(signal.SIGALRM, alarmed)
    try:
        os.chdir(path)
    except OSError as e:
        return 1 if errors.is_temporary(e) else 2
    middle = job.written.middle()
    host = os.fsencode(os.uname().nodename)[:64]  # gethostname()
    loop = 0
    while True:
        candidate = b"tmp/%d.%s.%s" % (int(time.time()), middle, cstring(host))
        try:
            os.stat(candidate)
        except FileNotFoundError:
            break
        except OSError:
            pass
        if loop == 2:
            return 1
        loop += 1
        time.sleep(2)
    newname = b"new" + candidate[3:]
    signal.alarm(MAILDIR_TIMEOUT)
    try:
        fd = os.open(candidate, os.O_WRONLY | os.O_EXCL | os.O_CREAT, 0o644)
    except OSError:
        return 1
    tmpname = candidate

    def fail(code: int) -> int:
        try:
            os.unlink(candidate)
        except OSError:
            pass
        return code

    buffered = bytearray(job.rpline + job.dtline)
    while True:
        try:
            chunk = os.read(msg_fd, CHUNK)
        except OSError:
            os.close(fd)
            return fail(4)
        buffered += chunk
        if not chunk or len(buffered) >= CHUNK:
            try:
                view = memoryview(buffered)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                os.close(fd)
                return fail(1)
            buffered = bytearray()
        if not chunk:
            break
    try:
        os.fsync(fd)
    except OSError:
        os.close(fd)
        return fail(1)
    try:
        os.close(fd)
    except OSError:
        return fail(1)
    try:
        os.link(candidate, newname)
    except OSError:
        return fail(1)
    # Linux makes the link durable only once new/ itself is synced.
    try:
        dirfd = os.open(b"new", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except OSError:
        return fail(1)
    fail(0)
    return 0


def maildir(job: Job, path: bytes, msg_fd: int) -> None:
    rewind(msg_fd)
    code = maildir_here(job, path, msg_fd)
    if code is None:
        pid = fork()
        if pid == 0:
            code = 1
            try:
                code = maildir_child(job, path, msg_fd)
            finally:
                os._exit(code)
        code = wait_child(pid)
    if code is None:
        raise Temporary(TEMP_CHILDCRASHED)
    if code != 0:
        raise Temporary(MAILDIR_TEXT.get(code, MAILDIR_OTHER))




def maildir_here(job: Job, path: bytes, msg_fd: int) -> int | None:
    """maildir_child()'s work in this process, saving qmail's fork: its exit
    code, or None when it must run in a child after all (the cwd cannot be
    kept).  The cwd, the SIGALRM handler and the alarm are put back afterwards."""
    try:
        here = os.open(b".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    previous = _signal.getsignal(signal.SIGALRM)
    code = 1
    try:
        code = maildir_child(job, path, msg_fd, forked=False)
    except MaildirTimeout:
        code = 3
    except Exception:
        code = 1   # what qmail's child would exit with
    finally:
        signal.alarm(0)
        _signal.signal(signal.SIGALRM, previous)
        try:
            os.fchdir(here)
        except OSError:
            raise Temporary(b"Unable to switch back to home directory. (#4.3.0)") from None
        finally:
            os.close(here)
    return code


def lock_exclusive(fd: int) -> bool:
    """lock_ex() under a 30-second alarm; False (continue unlocked) on errors."""
    def alarmed(signum, frame):
        raise SlowLock()

    previous = signal.signal(signal.SIGALRM, alarmed)
    try:
        signal.alarm(LOCK_TIMEOUT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            return False
        finally:
            signal.alarm(0)
    except SlowLock:
        raise Temporary(TEMP_SLOWLOCK) from None
    finally:
        signal.signal(signal.SIGALRM, previous)
    return True


def mailfile(job: Job, path: bytes, msg_fd: int) -> None:
    """mailfile(): append to an mbox under an exclusive lock; on failure cut the
    file back to where this message began."""
    rewind(msg_fd)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o600)
    except OSError as e:
        raise Temporary(b"Unable to open %s: %s. (#4.2.1)" % (path, errors.error_str(e))) from None
    try:
        locked = lock_exclusive(fd)
        pos = os.lseek(fd, 0, os.SEEK_END)
        failure = None
        try:
            write_mbox(job, fd, msg_fd)
        except ReadError as e:
            failure = Temporary(b"Unable to read message: %s. (#4.3.0)" % errors.error_str(e.error))
        except OSError as e:
            failure = Temporary(b"Unable to write %s: %s. (#4.3.0)" % (path, errors.error_str(e)))
        if failure is not None:
            if locked:
                try:
                    os.ftruncate(fd, pos)
                except OSError:
                    pass
            raise failure
    finally:
        os.close(fd)


def write_mbox(job: Job, fd: int, msg_fd: int) -> None:
    """From_, Return-Path, Delivered-To, the >From-quoted message, a blank line."""
    out = bytearray(job.ufline + job.rpline + job.dtline)
    for block in line_blocks(msg_fd):
        out += from_quote(block)
        if not block.endswith(b"\n"):
            out += b"\n"  # the unterminated last line gets its LF
        if len(out) >= CHUNK:
            write_all(fd, out)
            out = bytearray()
    out += b"\n"
    write_all(fd, out)
    os.fsync(fd)


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def child_fds(msg_fd: int, out_fd: int, err_fd: int) -> None:
    """In a child: message on 0, report on 1 and 2, nothing else open."""
    out = os.dup(out_fd)
    err = os.dup(err_fd)
    os.dup2(msg_fd, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.closerange(3, 65536)


def mailprogram(job: Job, command: bytes, env: dict[bytes, bytes],
                msg_fd: int, out_fd: int, err_fd: int) -> bool:
    """`|command` via /bin/sh -c; True when it exited 99 (skip later lines)."""
    rewind(msg_fd)
    pid = fork()
    if pid == 0:
        code = 111
        try:
            child_fds(msg_fd, out_fd, err_fd)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            try:
                os.execve(b"/bin/sh", [b"/bin/sh", b"-c", command], env)
            except OSError as e:
                errors.write_line(2, b"Unable to run /bin/sh: %s. (#4.3.0)" % errors.error_str(e))
        finally:
            os._exit(code)
    code = wait_child(pid)
    if code is None:
        raise Temporary(TEMP_CHILDCRASHED)
    if code in PERMANENT_PROGRAM_CODES:
        raise Exit(100)
    if code == 0:
        return False
    if code == 99:
        return True
    raise Exit(111)


def mailforward(job: Job, recipients: list[bytes], newsender: bytes,
                env: dict[bytes, bytes], msg_fd: int) -> int:
    """Queue DTLINE + message to every forward address; return the qp."""
    from pyqmail.qmail import Qmail
    rewind(msg_fd)
    qq = Qmail(auto.QMAIL_HOME, env)
    try:
        qq.open()
    except OSError as e:
        raise fork_failed(errors.error_str(e)) from None
    except Temporary as e:
        raise fork_failed(e.text.rpartition(b": ")[2]) from None
    qq.put(job.dtline)
    while True:
        try:
            chunk = os.read(msg_fd, CHUNK)
        except OSError:
            qq.fail()
            break
        if not chunk:
            break
        qq.put(chunk)
    qq.from_(newsender)
    for recipient in recipients:
        qq.to(recipient)
    result = qq.close()
    if result:
        text = b"Unable to forward message: %s." % result[1:]
        if result[:1] == b"D":
            raise Permanent(text)
        raise Temporary(text)
    return qq.qp


# --- the instructions -----------------------------------------------------

def deliver(job: Job, env: dict[bytes, bytes], msg_fd: int, out_fd: int, err_fd: int) -> None:
    """qmail-local's main() after option parsing."""
    try:
        os.chdir(job.homedir)
    except OSError as e:
        raise Temporary(b"Unable to switch to %s: %s. (#4.3.0)"
                        % (job.homedir, errors.error_str(e))) from None
    except ValueError:
        raise Temporary(b"Unable to switch to %s: file does not exist. (#4.3.0)" % job.homedir) from None
    check_home(job, err_fd)
    if job.doit:
        bouncexf(job, msg_fd)
    env = environment(job, env)
    fd, forward_only, default = qme_search(job)
    if default is not None:
        env[b"DEFAULT"] = default
    if fd is None and job.dash:
        raise Permanent(ERR_NOMAILBOX)
    newsender = new_sender(job)
    env[b"NEWSENDER"] = newsender

    cmds = read_qmail_file(fd) if fd is not None else b""
    if not cmds:
        cmds = job.aliasempty
        forward_only = False
    if not cmds.endswith(b"\n"):
        cmds += b"\n"

    counts = [0, 0, 0]  # file, forward, program
    recipients = []
    lines = cmds.split(b"\n")[:-1]
    for number, raw in enumerate(lines):
        line = raw.rstrip(b" \t")
        first = line[:1]
        text = cstring(line)
        if first in (b"", b"\0"):
            if number == 0:
                raise Temporary(ERR_BLANK)
        elif first == b"#":
            pass
        elif first in (b".", b"/"):
            counts[0] += 1
            if forward_only:
                raise Temporary(ERR_XBIT_FILE)
            if line.endswith(b"/"):
                if job.doit:
                    maildir(job, text, msg_fd)
                else:
                    sayit(out_fd, b"maildir ", line)
            elif job.doit:
                mailfile(job, text, msg_fd)
            else:
                sayit(out_fd, b"mbox ", line)
        elif first == b"|":
            counts[2] += 1
            if forward_only:
                raise Temporary(ERR_XBIT_PROG)
            if job.doit:
                if mailprogram(job, text[1:], env, msg_fd, out_fd, err_fd):
                    break
            else:
                sayit(out_fd, b"program ", line[1:])
        elif first == b"+":
            if text[1:] == b"list":
                forward_only = True
        else:
            if first == b"&":
                line = line[1:]
                text = text[1:]
            counts[1] += 1
            if job.doit:
                recipients.append(text)
            else:
                sayit(out_fd, b"forward ", line)

    qp = 0
    if recipients and job.doit:
        qp = mailforward(job, recipients, newsender, env, msg_fd)
    summary = b"did %d+%d+%d\n" % tuple(counts)
    if qp:
        summary += b"qp %d\n" % qp
    errors.write_line(out_fd, summary)


def sayit(fd: int, kind: bytes, text: bytes) -> None:
    errors.write_line(fd, kind + text + b"\n")


def run(argv: list[bytes], env: dict[bytes, bytes], msg_fd: int, report_fd: int,
        out_fd: int | None = None, written: Written | None = None) -> int:
    """Deliver one message as qmail-local(8) does; return the exit code.
    Failures go to report_fd, the summary to out_fd (default report_fd);
    written counts the maildir messages of a process that runs this again."""
    if out_fd is None:
        out_fd = report_fd
    os.umask(0o077)
    # _signal's functions here, not signal's wrappers: their enum conversions,
    # run for the first time in a forked delivery child, cost it a copy of
    # every page they touch
    _signal.signal(signal.SIGPIPE, _signal.SIG_IGN)
    try:
        job = Job(argv, written)
        deliver(job, env, msg_fd, out_fd, report_fd)
    except Exit as e:
        return e.code
    except Temporary as e:
        return errors.report(report_fd, e, 111)
    except Permanent as e:
        return errors.report(report_fd, e, 100)
    except MemoryError:
        return errors.report(report_fd, Temporary(TEMP_NOMEM), 111)
    return 0


def main() -> None:
    code = 111
    try:
        code = run([os.fsencode(a) for a in sys.argv], environ.original(), 0, 2, 1)
    except BaseException:
        code = errors.note_bug(2)
    finally:
        os._exit(code)
