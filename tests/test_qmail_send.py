"""qmail-send: preprocessing, the spawn protocol, results, retries, bounces and
the exact log lines (spec/send.md), with the real qmail-clean and queue service."""
import grp
import os
import re
import time

import pytest

from conftest import uid, wait_for
from queueutil import queue_files, read, submit_as
from sendutil import SendHarness
from pyqmail import qmail_send

SPLIT = 23


def configure(home, **files):
    base = {"me": "host.example.com"}
    base.update(files)
    for name, text in base.items():
        with open(os.path.join(home, "control", name), "w") as f:
            f.write(text + "\n")


def inject(home, sender: bytes, recipients: list[bytes], body=b"Subject: t\n\nhello\n"):
    """Queue as nobody through the queue service; the qp."""
    result, qp = submit_as(home, uid("nobody"), grp.getgrnam("nogroup").gr_gid, body,
                           [sender] + recipients)
    assert result == b"", result
    return qp


def deliver_all(send, local: int, remote: int) -> dict[bytes, int]:
    """Take that many delivery commands on each channel, report each a
    success; recipient -> channel (0 local, 1 remote)."""
    got = {}
    for channel, count in ((0, local), (1, remote)):
        for _ in range(count):
            slot, path, sender, rcpt = send.command(channel)
            got[rcpt] = channel
            send.report(channel, slot, b"K", b"r\0Kok\n" if channel else b"ok\n")
    return got


@pytest.fixture
def send(fresh_home):
    configure(fresh_home, locals="host.example.com", virtualdomains="virt.test:alice\n.fax:uucp-fax\nexcept.fax:")
    h = SendHarness(fresh_home)
    yield h
    h.stop()


def test_local_delivery_success_log_lines(send):
    send.read_log_until(rb"^status: local 0/10 remote 0/20$")
    qp = inject(send.home, b"joe@host.example.com", [b"mary@host.example.com"])
    slot, path, sender, rcpt = send.command(0)
    part, ident = path.split(b"/")
    assert int(ident) % SPLIT == int(part)
    assert (sender, rcpt) == (b"joe@host.example.com", b"mary@host.example.com")
    send.report(0, slot, b"K", b"did 1+0+0/\n")
    log = send.read_log_until(rb"^end msg %s$" % ident)
    size = os.stat(os.path.join(send.home, "queue", "mess", part.decode(), ident.decode())).st_size \
        if os.path.exists(os.path.join(send.home, "queue", "mess", part.decode(), ident.decode())) else None
    lines = log.decode().split("\n")
    i = lines.index(f"new msg {ident.decode()}")
    assert re.fullmatch(rf"info msg {ident.decode()}: bytes \d+ from <joe@host.example.com> qp {qp} uid {uid('nobody')}",
                        lines[i + 1])
    assert re.fullmatch(rf"starting delivery (\d+): msg {ident.decode()} to local mary@host.example.com", lines[i + 2])
    n = re.fullmatch(r"starting delivery (\d+): .*", lines[i + 2]).group(1)
    assert lines[i + 3:i + 7] == ["status: local 1/10 remote 0/20", f"delivery {n}: success: did_1+0+0//",
                                  "status: local 0/10 remote 0/20", f"end msg {ident.decode()}"]
    wait_for(lambda: queue_files(send.home)["mess"] == [])
    assert size is None or size > 0


def test_split_rules(send):
    send.read_log_until(rb"^status: local 0/10")
    inject(send.home, b"s@x", [b"joe", b"Joe@HOST.Example.com", b"info@virt.test", b"ann@other.test",
                               b"x@a.b.fax", b"x@except.fax"])
    assert deliver_all(send, local=4, remote=2) == {
        b"joe@host.example.com": 0, b"Joe@HOST.Example.com": 0, b"alice-info@virt.test": 0,
        b"uucp-fax-x@a.b.fax": 0, b"ann@other.test": 1, b"x@except.fax": 1}


def test_sighup_rereads_locals_and_virtualdomains(send):
    """SIGHUP: a domain added to locals and a new virtualdomains entry take
    effect for the next message; before it, the old files still rule."""
    send.read_log_until(rb"^status: local 0/10")
    inject(send.home, b"s@x", [b"ann@new.test"])
    slot, path, sender, rcpt = send.command(1)
    assert rcpt == b"ann@new.test"
    send.report(1, slot, b"K", b"r\0Kok\n")
    configure(send.home, locals="host.example.com\nnew.test", virtualdomains="virt2.test:bob")
    os.kill(send.pid, 1)
    time.sleep(0.5)  # qmail-send handles the flag in its main loop; a message queued now sees it
    inject(send.home, b"s@x", [b"ann@new.test", b"info@virt2.test", b"info@virt.test"])
    assert deliver_all(send, local=2, remote=1) == {
        b"ann@new.test": 0, b"bob-info@virt2.test": 0, b"info@virt.test": 1}

def test_failure_makes_exact_bounce(send):
    send.read_log_until(rb"^status: local 0/10")
    inject(send.home, b"joe@remote.example", [b"nosuch@host.example.com"], b"Subject: orig\n\nbody\n")
    slot, path, sender, rcpt = send.command(0)
    send.report(0, slot, b"D", b"Sorry, no mailbox here by that name. (#5.1.1)\n")
    log = send.read_log_until(rb"^bounce msg \d+ qp \d+$")
    assert b"failure: Sorry,_no_mailbox_here_by_that_name._(#5.1.1)/\n" in log
    # the bounce goes remote, from <>, to the sender
    slot, path, sender, rcpt = send.command(1)
    assert (sender, rcpt) == (b"", b"joe@remote.example")
    part, ident = path.decode().split("/")
    bounce = read(os.path.join(send.home, "queue", "mess", part, ident))
    head, _, rest = bounce.partition(b"\n")
    assert re.fullmatch(rb"Received: \(qmail \d+ invoked for bounce\); .* -0000", head)
    m = re.fullmatch(
        rb"Date: \d+ \w{3} \d{4} \d\d:\d\d:\d\d -0000\n"
        rb"From: MAILER-DAEMON@host.example.com\n"
        rb"To: joe@remote.example\n"
        rb"Subject: failure notice\n\n"
        rb"Hi. This is the qmail-send program at host.example.com.\n"
        rb"I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        rb"This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        rb"<nosuch@host.example.com>:\n"
        rb"Sorry, no mailbox here by that name. \(#5.1.1\)\n\n"
        rb"--- Below this line is a copy of the message.\n\n"
        rb"Return-Path: <joe@remote.example>\n"
        rb"Received: \(qmail \d+ invoked by uid \d+\); .*\n"
        rb"Subject: orig\n\nbody\n", rest, re.S)
    assert m, rest
    send.report(1, slot, b"K", b"r\0Kok\n")


def test_double_and_triple_bounce(send):
    send.read_log_until(rb"^status: local 0/10")
    inject(send.home, b"", [b"nosuch@host.example.com"])
    slot, path, sender, rcpt = send.command(0)
    send.report(0, slot, b"D", b"no mailbox\n")
    slot, path, sender, rcpt = send.command(0)
    assert (sender, rcpt) == (b"#@[]", b"postmaster@host.example.com")
    part, ident = path.decode().split("/")
    text = read(os.path.join(send.home, "queue", "mess", part, ident))
    assert b"I tried to deliver a bounce message to this address, but the bounce bounced!\n\n" in text
    assert b"--- Below this line is the original bounce.\n\nReturn-Path: <>\n" in text
    send.report(0, slot, b"D", b"postmaster fails too\n")
    send.read_log_until(rb"^triple bounce: discarding bounce/%s$" % ident.encode())
    send.read_log_until(rb"^end msg %s$" % ident.encode())


def test_deferral_is_retried_on_schedule_and_expires(send):
    send.read_log_until(rb"^status: local 0/10")
    inject(send.home, b"a@b", [b"c@host.example.com"])
    slot, path, sender, rcpt = send.command(0)
    part, ident = path.decode().split("/")
    send.report(0, slot, b"Z", b"try later\n")
    send.read_log_until(rb"deferral: try_later/")
    # age the message past queuelifetime, ALRM: one last try, then a bounce
    info = os.path.join(send.home, "queue", "info", part, ident)
    old = time.time() - 604801
    os.utime(info, (old, old))
    os.kill(send.pid, 14)
    slot, path, sender, rcpt = send.command(0)
    send.report(0, slot, b"Z", b"still later\n")
    send.read_log_until(rb"failure: still_later/I'm_not_going_to_try_again;_this_message_has_been_in_the_queue_too_long./")
    send.read_log_until(rb"^bounce msg %s qp" % ident.encode())


@pytest.mark.parametrize("channel,ages", [(0, [0, 100, 400, 900, 1600]), (1, [0, 400, 1600, 3600, 6400])])
def test_retry_formula(channel, ages):
    birth = 1_000_000
    now = birth
    seen = []
    for _ in ages:
        seen.append(now - birth)
        now = qmail_send.next_retry(birth, now, channel)
    assert seen == ages
    assert qmail_send.next_retry(birth, birth + 1700, 0) == birth + (41 + 10) ** 2
    assert qmail_send.next_retry(birth + 50, birth, 1) == birth + 50 + 400


def test_rewrite_examples():
    cfg = object.__new__(qmail_send.Config)
    cfg.envnoathost = b"host.example.com"
    cfg.percenthack = {b"host.example.com"}
    cfg.set_locals([b"host.example.com"])
    cfg.set_virtualdomains([b"virt.test:alice", b"bob@other.test:carol", b".fax:uucp-fax", b"except.fax:"])
    cases = {b"joe": (0, b"joe@host.example.com"), b"Joe@HOST.Example.com": (0, b"Joe@HOST.Example.com"),
             b"info@virt.test": (0, b"alice-info@virt.test"), b"bob@other.test": (0, b"carol-bob@other.test"),
             b"ann@other.test": (1, b"ann@other.test"), b"x@a.b.fax": (0, b"uucp-fax-x@a.b.fax"),
             b"x@except.fax": (1, b"x@except.fax"), b"x@a.except.fax": (0, b"uucp-fax-x@a.except.fax"),
             b"u%remote.org@host.example.com": (1, b"u@remote.org"),
             b"u%a%b@host.example.com": (1, b"u%a@b")}
    for addr, expect in cases.items():
        assert cfg.rewrite(addr) == expect, addr
    cfg.set_virtualdomains([b":alias-catchall"])
    assert cfg.rewrite(b"ann@other.test") == (0, b"alias-catchall-ann@other.test")
    cfg.set_virtualdomains([b"virt.test:alice"])
    assert cfg.unvirtual(b"alice-info@virt.test") == b"info@virt.test"


def test_verp_and_bounce_block_and_safe():
    assert qmail_send.verp(b"list-@lists.example.com-@[]", b"joe@remote.org") == \
        b"list-joe=remote.org@lists.example.com"
    assert qmail_send.verp(b"#@[]", b"x@y") == b"#@[]"
    assert qmail_send.bounce_block(b"joe@example.org", b"Sorry, no mailbox here by that name. (#5.1.1)\n") == \
        b"<joe@example.org>:\nSorry, no mailbox here by that name. (#5.1.1)\n\n"
    assert qmail_send.bounce_block(b"a\nb", b"x\n\ny") == b"<a_b>:\nx\n/y\n\n"
    assert qmail_send.safe(b"a b%c\n\x7f\xff") == b"a_b_c/__"


def test_concurrency_limit_and_sigterm(fresh_home):
    configure(fresh_home, locals="host.example.com", concurrencylocal="3")
    h = SendHarness(fresh_home)
    try:
        h.read_log_until(rb"^status: local 0/3 remote 0/20$")
        for i in range(6):
            inject(fresh_home, b"s@x", [b"r%d@host.example.com" % i])
        slots = [h.command(0) for _ in range(3)]
        h.read_log_until(rb"status: local 3/3")
        with pytest.raises(AssertionError):
            h.command(0, timeout=1.0)  # no fourth delivery while three are out
        os.kill(h.pid, 15)
        for slot, *_ in slots:
            h.report(0, slot, b"K", b"ok\n")
        h.read_log_until(rb"^status: local 0/3 remote 0/20 exitasap$")
        h.read_log_until(rb"^status: exiting$")
    finally:
        h.stop()
    # the three not yet delivered are still queued for the next start
    h2 = SendHarness(fresh_home)
    try:
        for _ in range(3):
            slot, *_ = h2.command(0)
            h2.report(0, slot, b"K", b"ok\n")
        wait_for(lambda: queue_files(fresh_home)["mess"] == [])
    finally:
        h2.stop()


def test_orphan_scan_removes_old_leftovers(fresh_home):
    """send.md §5.8: at start, mess files last accessed over 36 hours ago with
    neither info nor todo go to qmail-clean (foop); younger ones stay."""
    configure(fresh_home, locals="host.example.com")
    q = os.path.join(fresh_home, "queue")
    old = time.time() - 129600 - 60
    for ident, age in ((46, old), (47, time.time())):
        path = os.path.join(q, "mess", str(ident % SPLIT), str(ident))
        with open(path, "wb") as f:
            f.write(b"orphan\n")
        os.chown(path, uid("qmailq"), -1)
        os.utime(path, (age, age))
    intd = os.path.join(q, "intd", "46")
    with open(intd, "wb") as f:
        f.write(b"u0\0p1\0Fa\0")
    os.chown(intd, uid("qmailq"), -1)
    h = SendHarness(fresh_home)
    try:
        wait_for(lambda: not os.path.exists(os.path.join(q, "mess", "0", "46")))
        assert not os.path.exists(intd)
        assert os.path.exists(os.path.join(q, "mess", "1", "47"))
    finally:
        h.stop()


def _sigcgt(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    return 0


def test_signals_caught_before_the_spawners_greet(fresh_home):
    """send.md §1 step 4: TERM, ALRM and HUP are caught (flags only) before the
    mutex and the greeting bytes; a HUP or ALRM while the spawners are still
    starting does not kill qmail-send."""
    configure(fresh_home, locals="host.example.com")
    h = SendHarness(fresh_home, greet=False)
    try:
        wait_for(lambda: all(_sigcgt(h.pid) >> (sig - 1) & 1 for sig in (1, 14, 15)))
        os.kill(h.pid, 1)
        os.kill(h.pid, 14)
        time.sleep(0.2)
        h.greet()
        h.read_log_until(rb"^status: local 0/10 remote 0/20$")
        assert os.waitpid(h.pid, os.WNOHANG) == (0, 0)
    finally:
        h.stop()


def test_lost_spawner_leaves_its_message_unscheduled(fresh_home):
    """send.md §3.3/§5.7: a delivery outstanding on a lost spawner is no longer
    awaited and its job never closes, so the channel file keeps its mtime and
    the recipient is retried at once at the next start."""
    configure(fresh_home, locals="host.example.com")
    h = SendHarness(fresh_home)
    try:
        h.read_log_until(rb"^status: local 0/10")
        inject(fresh_home, b"a@b", [b"c@host.example.com"])
        slot, path, sender, rcpt = h.command(0)
        part, ident = path.decode().split("/")
        local = os.path.join(fresh_home, "queue", "local", part, ident)
        before = os.stat(local).st_mtime
        os.close(h.rep[0])                      # qmail-lspawn is gone
        h.rep[0] = os.open(os.devnull, os.O_RDONLY)
        h.read_log_until(rb"^alert: oh no! lost spawn connection! dying...$")
        h.read_log_until(rb"^status: exiting$")
    finally:
        h.stop()
    assert os.stat(local).st_mtime == before
    h2 = SendHarness(fresh_home)
    try:
        slot, path2, sender, rcpt = h2.command(0, timeout=5)
        assert (path2.decode(), rcpt) == (path.decode(), b"c@host.example.com")
        h2.report(0, slot, b"K", b"ok\n")
    finally:
        h2.stop()


def test_pass_cut_short_by_term_keeps_mtime(fresh_home):
    """send.md §5.7: a message whose pass is still open at exit is not
    rescheduled: its channel file keeps its mtime (no utime)."""
    configure(fresh_home, locals="host.example.com", concurrencylocal="1")
    h = SendHarness(fresh_home)
    try:
        h.read_log_until(rb"^status: local 0/1")
        inject(fresh_home, b"a@b", [b"r1@host.example.com", b"r2@host.example.com"])
        for _ in range(2):
            slot, path, sender, rcpt = h.command(0)
            h.report(0, slot, b"Z", b"later\n")
        h.read_log_until(rb"deferral: later/\n(.*\n)*.*deferral: later/$")
        part, ident = path.decode().split("/")
        local = os.path.join(fresh_home, "queue", "local", part, ident)
        before = os.stat(local).st_mtime
        time.sleep(1.2)
        os.kill(h.pid, 14)                      # ALRM: the pass opens now
        slot, path, sender, rcpt = h.command(0)
        assert rcpt == b"r1@host.example.com"
        os.kill(h.pid, 15)
        time.sleep(0.3)                         # TERM handled before the report
        h.report(0, slot, b"Z", b"later\n")      # a deferral writes nothing
        h.read_log_until(rb"^status: local 0/1 remote 0/20 exitasap$")
        h.read_log_until(rb"^status: exiting$")
    finally:
        h.stop()
    assert os.stat(local).st_mtime == before
    assert read(local) == b"Tr1@host.example.com\0Tr2@host.example.com\0"


def test_hup_reread_is_all_or_nothing_and_keeps_me(send):
    """send.md §6 / qmail's regetcontrols(): locals and virtualdomains are both
    read before either is used, a failure keeps both old tables, and a missing
    locals falls back to the `me` read at start, not a new one."""
    send.read_log_until(rb"^status: local 0/10")
    control = os.path.join(send.home, "control")
    configure(send.home, locals="host.example.com\nnew.test")
    os.unlink(os.path.join(control, "virtualdomains"))
    os.mkdir(os.path.join(control, "virtualdomains"))   # unreadable
    os.kill(send.pid, 1)
    send.read_log_until(rb"^alert: unable to reread control/virtualdomains$")
    inject(send.home, b"s@x", [b"ann@new.test"])
    slot, path, sender, rcpt = send.command(1)          # old locals: remote
    assert rcpt == b"ann@new.test"
    send.report(1, slot, b"K", b"r\0Kok\n")
    os.rmdir(os.path.join(control, "virtualdomains"))
    os.unlink(os.path.join(control, "locals"))
    configure(send.home, me="new.test")
    os.kill(send.pid, 1)
    time.sleep(0.5)  # the flag is handled in the main loop; a message queued now sees it
    inject(send.home, b"s@x", [b"ann@new.test", b"joe@host.example.com"])
    slot, path, sender, rcpt = send.command(0)
    assert rcpt == b"joe@host.example.com"              # locals = the old me
    send.report(0, slot, b"K", b"ok\n")
    slot, path, sender, rcpt = send.command(1)
    assert rcpt == b"ann@new.test"
    send.report(1, slot, b"K", b"r\0Kok\n")
    assert b"alert: unable to reread control/locals" not in send.log


def test_long_reports_cut_as_qmail(send):
    """qmail's REPORTMAX buffer keeps 10000 bytes of SLOT CODE TEXT: 9998 of
    text; for an expired deferral the cut one loses one more byte before the
    too-old sentence."""
    send.read_log_until(rb"^status: local 0/10")
    inject(send.home, b"a@b", [b"c@host.example.com"])
    slot, path, sender, rcpt = send.command(0)
    send.report(0, slot, b"K", b"a" * 12000 + b"\n")
    log = send.read_log_until(rb"^delivery \d+: success: a+$")
    assert re.search(rb"^delivery \d+: success: (a+)$", log, re.M).group(1) == b"a" * 9998
    inject(send.home, b"a@b", [b"d@host.example.com"])
    slot, path, sender, rcpt = send.command(0)
    send.report(0, slot, b"Z", b"later\n")
    send.read_log_until(rb"deferral: later/")
    part, ident = path.decode().split("/")
    old = time.time() - 604801
    os.utime(os.path.join(send.home, "queue", "info", part, ident), (old, old))
    os.kill(send.pid, 14)
    slot, path, sender, rcpt = send.command(0)
    send.report(0, slot, b"Z", b"b" * 12000)
    log = send.read_log_until(rb"^delivery \d+: failure: b+I'm_not")
    assert re.search(rb"^delivery \d+: failure: (b+)I'm_not_going_to_try_again;"
                     rb"_this_message_has_been_in_the_queue_too_long./$", log, re.M).group(1) == b"b" * 9997


def test_unreadable_info_names_info_in_the_warning(send):
    """qmail's pass_dochan(): when getinfo() fails the warning names info/S/ID
    (fn was last set there), not the channel file."""
    send.read_log_until(rb"^status: local 0/10")
    inject(send.home, b"a@b", [b"c@host.example.com"])
    slot, path, sender, rcpt = send.command(0)
    send.report(0, slot, b"Z", b"later\n")
    send.read_log_until(rb"deferral: later/")
    part, ident = path.decode().split("/")
    with open(os.path.join(send.home, "queue", "info", part, ident), "wb") as f:
        f.write(b"Xa@b\0")
    os.kill(send.pid, 14)
    send.read_log_until(rb"^warning: trouble opening info/%s/%s; will try again later$"
                        % (part.encode(), ident.encode()))


def test_verp_needs_an_at_in_the_recipient():
    assert qmail_send.verp(b"list-@lists.example.com-@[]", b"joe") == b"list-@lists.example.com-@[]"


def test_verp_cut_before_the_triple_bounce_test(send):
    """qmail's injectbounce(): `-@[]` is cut first, so `#@[]-@[]` is a double
    bounce's sender: a failure is a triple bounce, discarded."""
    send.read_log_until(rb"^status: local 0/10")
    inject(send.home, b"#@[]-@[]", [b"nosuch@host.example.com"])
    slot, path, sender, rcpt = send.command(0)
    send.report(0, slot, b"D", b"no mailbox\n")
    ident = path.decode().split("/")[1]
    send.read_log_until(rb"^end msg %s$" % ident.encode())
    assert b"triple bounce: discarding bounce/%s\n" % ident.encode() in send.log
    assert b"bounce msg %s" % ident.encode() not in send.log


def test_info_msg_numbers_are_scanned(fresh_home):
    """qmail's todo_do(): `u` and `p` records are read with scan_ulong() and
    logged as numbers (leading digits, else 0)."""
    configure(fresh_home, locals="host.example.com")
    q = os.path.join(fresh_home, "queue")
    ident = 1000
    for path, data in ((os.path.join(q, "mess", str(ident % SPLIT), str(ident)), b"body\n"),
                       (os.path.join(q, "todo", str(ident)), b"u12x\0pq\0Fs@x\0Tr@host.example.com\0")):
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, uid("qmailq"), -1)
    h = SendHarness(fresh_home)
    try:
        slot, path, sender, rcpt = h.command(0)
        h.report(0, slot, b"K", b"ok\n")
        h.read_log_until(rb"^end msg 1000$")
        assert b"\ninfo msg 1000: bytes 5 from <s@x> qp 0 uid 12\n" in h.log
    finally:
        h.stop()


def test_stat_error_at_completion_is_retried(send):
    """send.md §5.6 / qmail's messdone(): a stat error other than ENOENT on a
    channel file logs `unable to stat FILE; will try again later` and the
    message waits 123 s instead of being finished."""
    send.read_log_until(rb"^status: local 0/10")
    inject(send.home, b"a@b", [b"c@host.example.com"])
    slot, path, sender, rcpt = send.command(0)
    part, ident = path.decode().split("/")
    remote_dir = os.path.join(send.home, "queue", "remote", part)
    os.chmod(remote_dir, 0)
    try:
        send.report(0, slot, b"K", b"ok\n")
        send.read_log_until(rb"^warning: unable to stat remote/%s/%s; will try again later$"
                            % (part.encode(), ident.encode()))
        time.sleep(0.3)
        send.read_log_until(rb"^status: local 0/10")
        assert b"end msg %s\n" % ident.encode() not in send.log
        assert os.path.exists(os.path.join(send.home, "queue", "info", part, ident))
    finally:
        os.chmod(remote_dir, 0o700)


def test_vanished_todo_entry_is_a_warning(tmp_path, monkeypatch):
    """qmail's todo_do(): a todo/ID that cannot be opened, even for ENOENT,
    logs `warning: unable to open todo/ID`."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("todo")
    r, w = os.pipe()
    cfg = object.__new__(qmail_send.Config)
    s = qmail_send.Send(cfg, b"/nonexistent", qmail_send.Log(w), SPLIT, [], -1, -1)
    s.preprocess(12345, time.time())
    os.close(w)
    assert os.read(r, 1000) == b"warning: unable to open todo/12345\n"
    os.close(r)


def test_unvirtual_needs_an_at():
    """qmail's stripvdomprepend(): a recipient without @ is left alone."""
    cfg = object.__new__(qmail_send.Config)
    cfg.set_virtualdomains([b":alice"])
    assert cfg.unvirtual(b"alice-joe") == b"alice-joe"
    assert cfg.unvirtual(b"alice-joe@x") == b"joe@x"


def test_log_line_finishes_a_short_write(monkeypatch):
    """A write cut short (a signal during a blocked write) is continued: the
    reader sees the whole line."""
    r, w = os.pipe()
    real = os.write
    monkeypatch.setattr(qmail_send.os, "write", lambda fd, data: real(fd, data[:7]))
    qmail_send.Log(w).line(b"status: local 0/10 remote 0/20")
    monkeypatch.undo()
    os.close(w)
    assert os.read(r, 1000) == b"status: local 0/10 remote 0/20\n"
    os.close(r)


def test_lost_spawner_alert_follows_starting_delivery(fresh_home):
    """qmail writes a command in the loop iteration after logging it: when the
    spawner's pipe is gone (EPIPE) the alert follows `starting delivery` and
    its status line, whose busy slot stays counted."""
    configure(fresh_home, locals="host.example.com")
    h = SendHarness(fresh_home)
    try:
        h.read_log_until(rb"^status: local 0/10")
        os.close(h.cmd[0])                      # nobody reads qmail-send's fd 1
        h.cmd[0] = os.open(os.devnull, os.O_RDONLY)
        inject(fresh_home, b"a@b", [b"c@host.example.com"])
        log = h.read_log_until(rb"^status: exiting$")
        assert re.search(rb"^starting delivery \d+: msg \d+ to local c@host.example.com\n"
                         rb"status: local 1/10 remote 0/20\n"
                         rb"alert: oh no! lost spawn connection! dying...\n", log, re.M), log
    finally:
        h.stop()
