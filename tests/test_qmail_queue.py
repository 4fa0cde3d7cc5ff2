"""qmail-queue and the queue service: files, bytes, owners, exit codes
(spec/queue.md §3), crash safety and privilege separation."""
import grp
import os
import re
import stat
import subprocess
import threading
import time

import pytest

from conftest import in_child, public_tmpdir, install, uid
from queueutil import QueueService, queue_files, read, submit_as
from pyqmail import date822, qmail, prot

SPLIT = 23
DATE = rb"\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d -0000"


@pytest.fixture
def service(fresh_home):
    svc = QueueService(fresh_home).start()
    yield svc
    svc.stop()


def the_message(home):
    files = queue_files(home)
    assert len(files["todo"]) == 1 and files["mess"] and files["pid"] == []
    ident = files["todo"][0]
    return ident, os.path.join(home, "queue")


def test_service_path_writes_qmails_exact_files(service):
    home = service.home
    nofiles = grp.getgrnam("nofiles").gr_gid
    result, qp = submit_as(home, uid("qmaild"), nofiles,
                           b"Received: from x\nSubject: hi\n\nbody\0with NUL\n",
                           [b"a@x.org", b"b@y.net", b"c@z.com"])
    assert result == b""
    ident, q = the_message(home)
    n = int(ident) % SPLIT
    mess = os.path.join(q, "mess", str(n), ident)
    data = read(mess)
    assert re.fullmatch(rb"Received: \(qmail %d invoked from network\); %s\n" % (qp, DATE)
                        + rb"Received: from x\nSubject: hi\n\nbody\0with NUL\n", data), data
    assert os.stat(mess).st_ino == int(ident)
    todo = os.path.join(q, "todo", ident)
    intd = os.path.join(q, "intd", ident)
    assert read(todo) == b"u%d\0p%d\0Fa@x.org\0Tb@y.net\0Tc@z.com\0" % (uid("qmaild"), qp)
    assert os.stat(todo).st_ino == os.stat(intd).st_ino
    for path in (mess, todo):
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (uid("qmailq"), 0o644)


def test_each_submission_has_a_thread_of_its_own(service):
    """Submissions one after another each get a new thread (a new qp, as qmail
    gives each message a new qmail-queue process); when they are done, only the
    service's main thread remains."""
    home = service.home
    nofiles = grp.getgrnam("nofiles").gr_gid
    qps = []
    for i in range(5):
        result, qp = submit_as(home, uid("qmaild"), nofiles, b"Subject: %d\n\nbody\n" % i,
                               [b"a@x.org", b"b@y.net"])
        assert result == b""
        qps.append(qp)
    assert len(set(qps)) == 5
    assert len(queue_files(home)["todo"]) == 5
    tasks = os.path.join("/proc", str(service.proc.pid), "task")
    deadline = time.monotonic() + 10
    while len(os.listdir(tasks)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(tasks)) == 1


def test_received_line_names_the_caller(service):
    home = service.home
    q = grp.getgrnam("qmail").gr_gid
    for name, who in (("qmails", b"for bounce"), ("alias", b"by alias"),
                      ("nobody", b"by uid %d" % uid("nobody"))):
        before = set(queue_files(home)["todo"])
        result, qp = submit_as(home, uid(name), q, b"x\n", [b"", b"r@h"])
        assert result == b""
        (ident,) = set(queue_files(home)["todo"]) - before
        data = read(os.path.join(home, "queue", "mess", str(int(ident) % SPLIT), ident))
        assert data.startswith(b"Received: (qmail %d invoked %s); " % (qp, who)), data


def test_uid_is_unsigned(service):
    """qmail-queue prints getuid() with fmt_ulong: a uid above 2^31 is a large
    number in the Received line and the u record, never a negative one."""
    big = 4294967294
    q = grp.getgrnam("qmail").gr_gid
    result, qp = submit_as(service.home, big, q, b"x\n", [b"a@b", b"r@h"])
    assert result == b""
    ident, queue = the_message(service.home)
    assert read(os.path.join(queue, "todo", ident)).startswith(b"u%d\0p%d\0" % (big, qp))
    data = read(os.path.join(queue, "mess", str(int(ident) % SPLIT), ident))
    assert data.startswith(b"Received: (qmail %d invoked by uid %d); " % (qp, big)), data



def test_setuid_caller_is_named_by_its_real_uid(service):
    """qmail-queue names getuid(), the real uid: a setuid program (real uid
    nobody, effective uid qmaild) queues as nobody, not from the network."""
    nobody = uid("nobody")
    result, qp = submit_as(service.home, nobody, grp.getgrnam("nogroup").gr_gid, b"x\n",
                           [b"a@b", b"r@h"], effective_uid=uid("qmaild"))
    assert result == b""
    ident, queue = the_message(service.home)
    assert read(os.path.join(queue, "todo", ident)).startswith(b"u%d\0p%d\0" % (nobody, qp))
    data = read(os.path.join(queue, "mess", str(int(ident) % SPLIT), ident))
    assert data.startswith(b"Received: (qmail %d invoked by uid %d); " % (qp, nobody)), data


def run_qmail_queue(home, message: bytes, envelope: bytes, as_user=None, stdout=None):
    def demote():
        if as_user is not None:
            prot.drop(uid(as_user), grp.getgrnam("nofiles").gr_gid)
    r, w = os.pipe()
    os.write(w, envelope)
    os.close(w)
    msg = public_tmpdir("pyqmail-msg-") + "/m"
    with open(msg, "wb") as f:
        f.write(message)
    os.chmod(msg, 0o644)
    with open(msg, "rb") as m:
        done = subprocess.run([os.path.join(home, "bin", "qmail-queue")], stdin=m,
                              stdout=r if stdout is None else stdout, stderr=subprocess.PIPE,
                              preexec_fn=demote)
    os.close(r)
    return done


def test_bin_qmail_queue_as_user_goes_through_service(service):
    done = run_qmail_queue(service.home, b"Subject: t\n\nx\n", b"Fme@h\0Tyou@h\0\0", as_user="nobody")
    assert (done.returncode, done.stderr) == (0, b"")
    ident, q = the_message(service.home)
    assert read(os.path.join(q, "todo", ident)).startswith(b"u%d\0p" % uid("nobody"))


def test_bin_qmail_queue_qp_is_its_own_pid(service):
    """Callers such as fastforward print their qmail-queue child's pid as the qp;
    the Received line and the todo file carry that same number, as in qmail."""
    r, w = os.pipe()
    os.write(w, b"Fme@h\0Tyou@h\0\0")
    os.close(w)
    proc = subprocess.Popen([os.path.join(service.home, "bin", "qmail-queue")],
                            stdin=subprocess.PIPE, stdout=r, stderr=subprocess.PIPE,
                            preexec_fn=lambda: prot.drop(uid("nobody"), grp.getgrnam("nofiles").gr_gid))
    os.close(r)
    _, err = proc.communicate(b"Subject: t\n\nx\n", timeout=30)
    assert (proc.returncode, err) == (0, b"")
    ident, q = the_message(service.home)
    assert read(os.path.join(q, "todo", ident)).startswith(b"u%d\0p%d\0" % (uid("nobody"), proc.pid))
    mess = os.path.join(q, "mess", str(int(ident) % SPLIT), ident)
    assert read(mess).startswith(b"Received: (qmail %d invoked by uid %d); " % (proc.pid, uid("nobody")))


def test_bin_qmail_queue_as_root_writes_directly_as_qmailq(fresh_home):
    done = run_qmail_queue(fresh_home, b"x\n", b"F\0Tr@h\0\0")
    assert done.returncode == 0, done.stderr
    ident, q = the_message(fresh_home)
    todo = os.path.join(q, "todo", ident)
    assert read(todo).startswith(b"u0\0p")
    mess = os.path.join(q, "mess", str(int(ident) % SPLIT), ident)
    assert read(mess).startswith(b"Received: (qmail ")
    assert b" invoked by uid 0); " in read(mess)
    assert os.stat(mess).st_uid == os.stat(todo).st_uid == uid("qmailq")


def test_no_service_means_73(fresh_home):
    done = run_qmail_queue(fresh_home, b"x\n", b"Fa\0Tb\0\0", as_user="nobody")
    assert done.returncode == 73
    assert done.stderr.count(b"\n") == 1 and done.stderr.startswith(b"qmail-queue: fatal: ")
    result, qp = submit_as(fresh_home, uid("qmaild"), grp.getgrnam("nofiles").gr_gid, b"x\n", [b"a", b"b"])
    assert result == b"Zconnection to mail server rejected (#4.4.1)"
    assert queue_files(fresh_home) == {"pid": [], "intd": [], "todo": [], "mess": []}


@pytest.mark.parametrize("envelope,code", [
    (b"Fa@b\0Tc@d\0", 54),                 # no final NUL
    (b"Fa@b\0Tc@d", 54),                   # EOF inside an address
    (b"", 54),
    (b"Xa@b\0\0", 91),                     # first byte not F
    (b"Fa@b\0Xc@d\0\0", 91),               # recipient record not T
    (b"F" + b"a" * 1003 + b"\0\0", 11),    # sender too long
    (b"Fa\0T" + b"r" * 1003 + b"\0\0", 11),
])
def test_bad_envelopes(service, envelope, code):
    done = run_qmail_queue(service.home, b"msg\n", envelope, as_user="nobody")
    assert done.returncode == code
    files = queue_files(service.home)
    assert files["todo"] == [] and files["pid"] == []
    if code == 54:  # cleaned up at once
        assert files == {"pid": [], "intd": [], "todo": [], "mess": []}


@pytest.mark.parametrize("envelope,stored", [
    (b"F" + b"a" * 1002 + b"\0\0", b"F" + b"a" * 1002 + b"\0"),
    (b"Fa\0\0", b"Fa\0"),                          # zero recipients
    (b"F\0T\0\0", b"F\0T\0"),                      # empty values
    (b"Fa\0Tb\0\0trailing junk", b"Fa\0Tb\0"),     # bytes after the final NUL ignored
])
def test_good_envelopes(service, envelope, stored):
    done = run_qmail_queue(service.home, b"msg\n", envelope, as_user="nobody")
    assert done.returncode == 0
    ident, q = the_message(service.home)
    assert read(os.path.join(q, "todo", ident)).split(b"\0", 2)[2] == stored


def test_closed_fd1_is_54(service):
    done = run_qmail_queue(service.home, b"m\n", b"", as_user="nobody", stdout=subprocess.DEVNULL)
    # /dev/null as fd 1: the envelope reads EOF at once
    assert done.returncode == 54
    msg = public_tmpdir("pyqmail-msg-") + "/m"
    open(msg, "wb").close()
    os.chmod(msg, 0o644)
    with open(msg, "rb") as m:
        done = subprocess.run(["sh", "-c", f'exec "$0" 1>&-', os.path.join(service.home, "bin", "qmail-queue")],
                              stdin=m, capture_output=False,
                              preexec_fn=lambda: prot.drop(uid("nobody"), grp.getgrnam("nofiles").gr_gid))
    assert done.returncode == 54
    assert queue_files(service.home) == {"pid": [], "intd": [], "todo": [], "mess": []}


def test_big_message_streams_byte_exact(service):
    size = 100 * 1024 * 1024
    block = bytes(range(256)) * 4096  # 1 MiB with NULs and 8-bit bytes
    r, w = os.pipe()
    envr, envw = os.pipe()
    proc = subprocess.Popen([os.path.join(service.home, "bin", "qmail-queue")], stdin=r, stdout=envr,
                            preexec_fn=lambda: prot.drop(uid("nobody"), grp.getgrnam("nofiles").gr_gid))
    os.close(r)
    os.close(envr)
    for _ in range(size // len(block)):
        _write(w, block)
    os.close(w)
    os.write(envw, b"Fbig@h\0Tr@h\0\0")
    os.close(envw)
    assert proc.wait(120) == 0
    ident, q = the_message(service.home)
    mess = os.path.join(q, "mess", str(int(ident) % SPLIT), ident)
    with open(mess, "rb") as f:
        first = f.readline()
        assert first.startswith(b"Received: (qmail ")
        for _ in range(size // len(block)):
            assert f.read(len(block)) == block
        assert f.read() == b""
    rss_kb = int(re.search(rb"VmHWM:\s+(\d+)", read(f"/proc/{service.proc.pid}/status")).group(1))
    assert rss_kb < 60 * 1024, rss_kb  # streamed: far below the message size


def _write(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def tasks_of(user_id: int) -> int:
    """How many threads of all processes run as user_id (RLIMIT_NPROC counts them)."""
    n = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                for tid in os.listdir(os.path.join("/proc", pid, "task")):
                    if os.stat(os.path.join("/proc", pid, "task", tid)).st_uid == user_id:
                        n += 1
            except OSError:
                continue
    return n


def test_no_thread_for_a_submission_closes_it_and_serves_on(service):
    """A submission the service cannot give a thread (qmailq at its RLIMIT_NPROC)
    gets its connection closed, which the caller reports as a failed
    communication (74, temporary); nothing is queued, and the service goes on
    accepting: once threads can be had again, the next submission is queued."""
    import resource
    qmailq = uid("qmailq")
    gid = grp.getgrnam("nofiles").gr_gid

    def soft_limit(value):
        # as qmailq itself: root may lack CAP_SYS_RESOURCE, which another
        # user's process would need
        def body():
            prot.drop(qmailq, grp.getgrnam("qmail").gr_gid)
            hard = resource.prlimit(service.proc.pid, resource.RLIMIT_NPROC)[1]
            resource.prlimit(service.proc.pid, resource.RLIMIT_NPROC, (value, hard))
            return b"ok"
        assert in_child(body) == b"ok"

    limit = tasks_of(qmailq)
    assert limit >= 1
    soft_limit(limit)
    assert submit_as(service.home, uid("qmaild"), gid, b"x\n", [b"a", b"b"]) == (
        b"Zcommunication with mail server failed (#4.4.2)", 0)
    assert queue_files(service.home) == {"pid": [], "intd": [], "todo": [], "mess": []}
    assert service.proc.poll() is None
    soft_limit(limit + 100)
    result, qp = submit_as(service.home, uid("qmaild"), gid, b"x\n", [b"a", b"b"])
    assert result == b"" and qp > 0
    assert len(queue_files(service.home)["todo"]) == 1


def test_concurrent_submissions_get_distinct_qps(service):
    results = []
    gid = grp.getgrnam("nofiles").gr_gid

    def one(i):
        results.append(submit_as(service.home, uid("qmaild"), gid, b"m%d\n" % i, [b"s", b"r%d" % i]))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r for r, qp in results] == [b""] * 40
    assert len(queue_files(service.home)["todo"]) == 40
    assert queue_files(service.home)["pid"] == []


def test_stalled_client_blocks_nobody(service):
    s = qmail.connect(service.home.encode())
    r, w = os.pipe()
    er, ew = os.pipe()
    qmail.submit(s, r, er)
    os.write(w, b"partial")  # and then nothing
    result, qp = submit_as(service.home, uid("qmaild"), grp.getgrnam("nofiles").gr_gid, b"x\n", [b"a", b"b"])
    assert result == b""
    for fd in (r, w, er, ew):
        os.close(fd)
    s.close()


def test_qmaild_cannot_touch_the_queue(service):
    home = service.home
    gid = grp.getgrnam("nofiles").gr_gid
    assert submit_as(home, uid("qmaild"), gid, b"secret\n", [b"a", b"b"])[0] == b""
    ident, q = the_message(home)
    mess = os.path.join(q, "mess", str(int(ident) % SPLIT), ident)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            prot.drop(uid("qmaild"), gid)
            report = []
            for attempt in (lambda: open(mess, "rb"), lambda: open(mess, "ab"),
                            lambda: os.listdir(q), lambda: os.listdir(os.path.join(q, "todo")),
                            lambda: os.unlink(os.path.join(q, "todo", ident)),
                            lambda: open(os.path.join(q, "todo", "1"), "wb"),
                            lambda: os.listdir(os.path.join(q, "lock"))):
                try:
                    attempt()
                    report.append(b"allowed")
                except PermissionError:
                    report.append(b"denied")
            os.write(w, b" ".join(report))
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 1000)
    os.waitpid(pid, 0)
    assert out == b" ".join([b"denied"] * 7)


def test_full_disk_is_53_and_leaves_nothing(fresh_home):
    q = os.path.join(fresh_home, "queue")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", q], check=True)
    try:
        assert install(fresh_home).returncode == 0  # the queue dirs again, on the tmpfs
        svc = QueueService(fresh_home).start()
        try:
            done = run_qmail_queue(fresh_home, b"x" * (3 * 1024 * 1024), b"Fa\0Tb\0\0", as_user="nobody")
            assert done.returncode == 53
            assert queue_files(fresh_home) == {"pid": [], "intd": [], "todo": [], "mess": []}
            done = run_qmail_queue(fresh_home, b"small\n", b"Fa\0Tb\0\0", as_user="nobody")
            assert done.returncode == 0
        finally:
            svc.stop()
    finally:
        subprocess.run(["umount", "-l", q], check=True)


def test_qmailqueue_variable_execs_the_program(fresh_home):
    capture = public_tmpdir("pyqmail-cap-")
    script = os.path.join(capture, "qq")
    with open(script, "w") as f:
        f.write(f"#!/bin/sh\npwd > {capture}/cwd\ncat > {capture}/msg\ncat <&1 > {capture}/env\nexit 31\n")
    os.chmod(script, 0o755)
    os.chmod(capture, 0o777)
    result, qp = submit_as(fresh_home, uid("qmaild"), grp.getgrnam("nofiles").gr_gid, b"hello\n",
                           [b"s@h", b"r@h"], env={b"QMAILQUEUE": script.encode()})
    assert result == b"Dmail server permanently rejected message (#5.3.0)"
    assert read(f"{capture}/msg") == b"hello\n"
    assert read(f"{capture}/env") == b"Fs@h\0Tr@h\0\0"
    assert read(f"{capture}/cwd") == fresh_home.encode() + b"\n"
    assert qp > 0


@pytest.mark.parametrize("code,text", [
    (0, b""), (11, b"Denvelope address too long for qq (#5.1.3)"),
    (53, b"Zqq write error or disk full (#4.3.0)"), (54, b"Zqq read error (#4.3.0)"),
    (62, b"Zqq trouble creating files in queue (#4.3.0)"), (75, b"Zqq temporary problem (#4.3.0)"),
    (25, b"Dqq permanent problem (#5.3.0)"), (120, b"Zunable to exec qq (#4.3.0)"),
    (81, b"Zqq internal bug (#4.3.0)"), (91, b"Zqq internal bug (#4.3.0)"),
])
def test_exit_texts(code, text):
    assert qmail.exit_text(code) == text


STEPS = [b"pidfile", b"mess", b"body", b"intd", b"envelope", b"todo"]


@pytest.mark.parametrize("step", STEPS)
def test_crash_at_each_step(fresh_home, step):
    """Kill the service at each step: nothing half-written becomes visible in
    todo/, and what is left is what qmail-clean / the 36-hour scan remove."""
    q = os.path.join(fresh_home, "queue")
    with open(os.path.join(q, "lock", "crashtest"), "wb") as f:
        f.write(step)
    svc = QueueService(fresh_home).start()
    result, qp = submit_as(fresh_home, uid("qmaild"), grp.getgrnam("nofiles").gr_gid,
                           b"body\n", [b"s", b"r"])
    svc.proc.wait(10)
    assert result == b"Zcommunication with mail server failed (#4.4.2)"
    files = queue_files(fresh_home)
    if step == b"todo":
        # committed just before the crash: queued, complete (a resend would duplicate)
        (ident,) = files["todo"]
        assert read(os.path.join(q, "todo", ident)) == b"u%d\0p%d\0Fs\0Tr\0" % (uid("qmaild"), qp)
        return
    assert files["todo"] == []
    # age every leftover 37 hours, then do what qmail-clean and qmail-send's scan do
    old = time.time() - 37 * 3600
    for kind in ("pid", "intd"):
        for name in files[kind]:
            os.utime(os.path.join(q, kind, name), (old, old))
    for name in files["mess"]:
        os.utime(os.path.join(q, "mess", name), (old, old))
    requests = b"".join(b"foop/%s\0" % name.split("/")[1].encode() for name in files["mess"])
    done = subprocess.run([os.path.join(fresh_home, "bin", "qmail-clean")], input=requests,
                          capture_output=True,
                          preexec_fn=lambda: prot.drop(uid("qmailq"), grp.getgrnam("qmail").gr_gid))
    assert done.stdout == b"+" * len(files["mess"])
    assert queue_files(fresh_home) == {"pid": [], "intd": [], "todo": [], "mess": []}
    os.unlink(os.path.join(q, "lock", "crashtest"))
    svc = QueueService(fresh_home).start()
    try:
        assert submit_as(fresh_home, uid("qmaild"), grp.getgrnam("nofiles").gr_gid,
                         b"again\n", [b"s", b"r"])[0] == b""
    finally:
        svc.stop()


def test_service_killed_mid_submission_then_serves_again(fresh_home):
    svc = QueueService(fresh_home).start()
    s = qmail.connect(fresh_home.encode())
    r, w = os.pipe()
    er, ew = os.pipe()
    qmail.submit(s, r, er)
    os.write(w, b"half a message")
    buf = bytearray()
    assert qmail.read_record(s, buf).startswith(b"qp ")
    svc.kill()
    assert qmail.read_record(s, buf) is None
    for fd in (r, w, er, ew):
        os.close(fd)
    s.close()
    assert queue_files(fresh_home)["todo"] == []
    svc.start()
    try:
        assert submit_as(fresh_home, uid("qmaild"), grp.getgrnam("nofiles").gr_gid, b"x\n", [b"a", b"b"])[0] == b""
    finally:
        svc.stop()


def test_trigger_is_pulled(service):
    q = os.path.join(service.home, "queue")
    fd = os.open(os.path.join(q, "lock", "trigger"), os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert submit_as(service.home, uid("qmaild"), grp.getgrnam("nofiles").gr_gid, b"x\n", [b"a", b"b"])[0] == b""
        assert os.read(fd, 10) == b"\0"
    finally:
        os.close(fd)


def test_date822():
    assert date822.date822fmt(1709629621) == b"5 Mar 2024 09:07:01 -0000"
    assert date822.date822fmt(1699833547) == b"12 Nov 2023 23:59:07 -0000"


def test_client_writes_as_qmail_c_buffers(tmp_path):
    """qmail.Qmail collects what put() gives, as qmail.c's substdio does: the
    queue's end of the message pipe sees nothing until OUTSIZE bytes or the
    envelope, then the bytes in order; the envelope arrives whole at close()."""
    import select
    import socket
    got = {}

    def service(_home):
        ours, theirs = socket.socketpair()
        got["end"] = theirs
        return ours

    def readable(fd):
        return bool(select.select([fd], [], [], 0)[0])

    def drain(fd):
        out = b""
        while readable(fd) and (chunk := os.read(fd, 65536)):
            out += chunk
        return out

    qq = qmail.Qmail(str(tmp_path).encode(), service=service)
    qq.open()
    _, fds, _, _ = socket.recv_fds(got["end"], 1, 2)
    message, envelope = fds
    qq.put(b"Received: from x\n")
    qq.put(b"Subject: y\n\n")
    assert not readable(message)
    big = b"z" * (qmail.OUTSIZE - 10) + b"\n"
    qq.put(big)
    assert drain(message) == b"Received: from x\nSubject: y\n\n" + big
    qq.put(b"tail\n")
    assert not readable(message)
    qq.from_(b"a@b")
    qq.to(b"c@d")
    assert drain(message) == b"tail\n" and os.read(message, 1) == b""
    assert not readable(envelope)
    got["end"].sendall(b"qp 7\0exit 0\0")
    assert qq.close() == b"" and qq.qp == 7
    assert os.read(envelope, 100) == b"Fa@b\0Tc@d\0\0" and os.read(envelope, 1) == b""
    for fd in fds:
        os.close(fd)
    got["end"].close()
