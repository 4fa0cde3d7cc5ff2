"""pyqmail against a real Postfix, both ways, on loopback: the whole qmail-start
tree delivers through qmail-remote into a private Postfix's Maildir; the
private Postfix relays into qmail-smtpd under the real tcpserver; Postfix's
smtp-source loads qmail-smtpd; and 100 remote deliveries stay within
control/concurrencyremote against a slow peer."""
import grp
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import need_root, uid, wait_for
from localusers import Users
from postfixpeer import Postfix, free_port
from remote_peers import Peer
from test_qmail_start import Tree, queue_as, queue_many, status

ME = "host.example.com"
SENDER = b"sender@example.org"
QMAIL_RECEIVED = re.compile(rb"Received: \(qmail \d+ invoked (by uid \d+|from network)\); "
                            rb"\d{1,2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d -0000\n")


def body(long_line: int) -> bytes:
    """A message with dot-stuffed lines, 8-bit bytes and one long line, in
    qmail's LF line ends; fully qualified header addresses, so a Postfix that
    rewrites headers of local submissions has nothing to change."""
    return (b"From: Sender <sender@example.org>\nTo: rcpt@example.net\nSubject: interop\n"
            b"Date: Mon, 4 Mar 2024 10:00:00 +0000\nMessage-ID: <interop.1@example.org>\n\n"
            b".one leading dot\n..two leading dots\n.\n...\n"
            b"\xe9\xe8\xff\x80 eight bit \x01\x7f\n" + b"L" * long_line + b"\nlast line\n")


def write_control(home: str, name: str, data: str):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(data)


def config(home: str):
    subprocess.run([os.path.join(home, "bin", "config-fast"), ME], check=True, capture_output=True)


def start_tree(home: str, local: int = 10, remote: int = 20) -> Tree:
    tree = Tree(home)
    tree.wait_log(rb"^status: local 0/%d remote 0/%d$" % (local, remote))
    wait_for(lambda: os.path.exists(os.path.join(home, "queue/lock/qmail-queued")))
    return tree


def until(cond, timeout: float, *logs):
    """wait_for, and on failure show the logs (callables returning bytes)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("not true after %ss\n%s" % (timeout, b"\n----\n".join(
                log()[-4000:] for log in logs).decode("latin-1")))
        time.sleep(0.01)


def maildir_files(maildir: str) -> list[str]:
    new = os.path.join(maildir, "new")
    return sorted(os.path.join(new, name) for name in os.listdir(new))


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture
def users():
    need_root()
    u = Users()
    yield u
    u.cleanup()


class SmtpServer:
    """qmail-smtpd under the real tcpserver (ucspi-tcp) as qmaild, on a port in
    29000-29999, queueing through the tree's qmail-queued."""

    def __init__(self, home: str):
        self.home = home
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["tcpserver", "-v", "-R", "-H", "-l", ME, "-c", "40",
             "-u", str(uid("qmaild")), "-g", str(grp.getgrnam("nofiles").gr_gid),
             "127.0.0.1", str(self.port), os.path.join(home, "bin", "qmail-smtpd")],
            env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            assert self.proc.poll() is None, "tcpserver exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up)

    def children(self) -> list[int]:
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def stop(self):
        """Stop tcpserver, then see its qmail-smtpd children gone (a client
        still connected gets a bounded wait, then SIGKILL by pid)."""
        kids = self.children()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

        def alive(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except OSError:
                return False
        deadline = time.monotonic() + 20
        while any(map(alive, kids)) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid in filter(alive, kids):
            os.kill(pid, 9)


# ---- issue 7: qmail-remote -> Postfix


def test_qmail_remote_delivers_into_postfix_maildir(fresh_home, users):
    """A message from the qmail-start tree through qmail-rspawn and
    qmail-remote into a private Postfix, which puts it in a Maildir: what
    follows Postfix's and qmail-queue's headers is the message byte for byte.
    A message without a final newline is refused as qmail-remote 1.03 refuses
    it (perm_partialline: the connection dropped in DATA, a permanent failure),
    and Postfix keeps nothing of it."""
    config(fresh_home)
    joe = users.make("pfin")
    maildir = joe.maildir()
    postfix = Postfix(hostname="postfix.test")
    tree = None
    try:
        assert postfix.check_output == b""
        write_control(fresh_home, "smtproutes", "postfix.test:127.0.0.1:%d\n" % postfix.port)
        tree = start_tree(fresh_home)
        rcpt = b"%s@postfix.test" % joe.name.encode()
        # longer than Postfix smtpd's line_length_limit of 2048: it splits the
        # line on input and joins it again on delivery
        message = body(5000)
        assert queue_as(fresh_home, "nobody", message, b"F%s\0T%s\0\0" % (SENDER, rcpt)) == 0
        until(lambda: maildir_files(maildir), 60, tree.read_log, postfix.log)
        tree.wait_log(rb"^end msg \d+$")
        # null sender: its bounce is a double bounce to the local postmaster
        unterminated = b"Subject: no final newline\n\nlast line has no LF \xff"
        assert queue_as(fresh_home, "nobody", unterminated, b"F\0T%s\0\0" % rcpt) == 0
        log = tree.wait_log(rb"^delivery \d+: failure: SMTP_cannot_transfer_messages_with_partial_final_"
                            rb"lines\._\(#5\.6\.2\)/$", 60).decode()
        log = tree.wait_log(rb"^bounce msg \d+ qp \d+$").decode()
        until(lambda: b"lost connection after DATA" in postfix.log(), 30, postfix.log)
        until(lambda: postfix.mailq() == b"Mail queue is empty\n", 30, postfix.mailq, postfix.log)
        maillog = postfix.log().decode()
    finally:
        if tree is not None:
            tree.stop()
        postfix.stop()

    (path,) = maildir_files(maildir)
    data = read(path)
    assert os.stat(path).st_uid == joe.uid
    # Postfix's local(8): Return-Path, X-Original-To, Delivered-To, its Received
    m = re.match(rb"Return-Path: <sender@example.org>\nX-Original-To: %s\nDelivered-To: %s\n"
                 rb"Received: from %s \(unknown \[127\.0\.0\.1\]\)\n"
                 rb"\tby postfix\.test \(Postfix\) with ESMTP id ([0-9A-F]+)\n"
                 rb"\tfor <%s>; [^\n]+\n" % (rcpt, rcpt, ME.encode(), rcpt), data)
    assert m, data[:400]
    ident = m.group(1).decode()
    rest = data[m.end():]
    q = QMAIL_RECEIVED.match(rest)
    assert q and q.group(1) == b"by uid %d" % uid("nobody"), rest[:200]
    assert rest[q.end():] == message

    # qmail-send's log: the remote success carries Postfix's own reply
    assert re.search(r"^delivery 1: success: 127\.0\.0\.1_accepted_message\./"
                     r"Remote_host_said:_250_2\.0\.0_Ok:_queued_as_%s/$" % ident, log, re.M), log
    assert re.search(r"postfix/local\[\d+\]: %s: to=<%s>, .*status=sent \(delivered to maildir\)"
                     % (ident, re.escape(rcpt.decode())), maillog), maillog
    # the refused one: accepted through RCPT, dropped in DATA, never queued
    assert len(re.findall(r"postfix/local\[", maillog)) == 1
    assert re.search(r"lost connection after DATA \(\d+ bytes\) from unknown\[127\.0\.0\.1\]", maillog)

class CountingPeer(Peer):
    """A slow SMTP peer that counts the sessions open at once.  It holds each
    message's final reply until `target` sessions are open together (or
    `hold` seconds pass), and stops counting a session when its QUIT arrives:
    the client's slot is still taken then, so the count never overstates."""

    def __init__(self, target: int, hold: float, **kw):
        self.cond = threading.Condition()
        self.now = 0
        self.most = 0
        self.target = target
        self.hold = hold
        self.quit_seen = threading.local()
        super().__init__(**kw)

    def serve(self, conn, session):
        with self.cond:
            self.now += 1
            self.most = max(self.most, self.now)
            self.cond.notify_all()
        self.quit_seen.done = False
        try:
            super().serve(conn, session)
        finally:
            self.leave()

    def leave(self):
        if not self.quit_seen.done:
            self.quit_seen.done = True
            with self.cond:
                self.now -= 1

    def say(self, conn, key) -> bool:
        if key == "END":
            with self.cond:
                self.cond.wait_for(lambda: self.now >= self.target, timeout=self.hold)
        elif key == "QUIT":
            self.leave()
        return super().say(conn, key)


def test_100_remote_deliveries_within_concurrencyremote(fresh_home):
    """100 messages, each to its own domain, all routed to one slow peer with
    control/concurrencyremote 20: the peer sees 20 at once and never more,
    qmail-send's status lines never pass 20, and all 100 arrive once."""
    need_root()
    config(fresh_home)
    write_control(fresh_home, "concurrencyremote", "20\n")
    peer = CountingPeer(target=20, hold=5.0, port=free_port())
    tree = None
    try:
        write_control(fresh_home, "smtproutes", ":127.0.0.1:%d\n" % peer.port)
        tree = start_tree(fresh_home)
        for i in range(100):   # one message per domain, as nobody through qmail-queued
            queue_many(fresh_home, 1, b"r@d%d.remote.test" % i, tag=b"%d-" % i)
        until(lambda: len(re.findall(rb"^end msg \d+$", tree.read_log(), re.M)) == 100, 180,
              tree.read_log)
        log = tree.wait_log(rb"^status: local 0/10 remote 0/20$").decode()
    finally:
        if tree is not None:
            tree.stop()
        peer.close()
    busy = [int(n) for n in re.findall(r"^status: local \d+/10 remote (\d+)/20$", log, re.M)]
    print("peer: most sessions at once %d; qmail-send: most remote %d" % (peer.most, max(busy)))
    assert max(busy) == 20
    assert peer.most == 20
    assert len(re.findall(r"^delivery \d+: success: 127\.0\.0\.1_accepted_message\./"
                          r"Remote_host_said:_250_ok_1709629621_qp_4242/$", log, re.M)) == 100
    messages = sorted(s.data for s in peer.sessions if s.data is not None)
    assert len(messages) == 100
    numbers = sorted(re.search(rb"\r\nmessage (\d+)-0\r\n\.\r\n$", m).group(1) for m in messages)
    assert numbers == sorted(b"%d" % i for i in range(100))
    rcpts = sorted(line for s in peer.sessions for line in s.lines if line.startswith(b"RCPT"))
    assert rcpts == sorted(b"RCPT TO:<r@d%d.remote.test>\r\n" % i for i in range(100))


# ---- issue 8: Postfix -> qmail-smtpd


def test_postfix_relays_into_qmail_smtpd(fresh_home, users):
    """A message given to Postfix's sendmail goes out through Postfix's smtp
    client to qmail-smtpd under tcpserver, through the qmail-start tree into
    the user's Maildir, body byte for byte; Postfix logs it sent and its
    queue is empty."""
    config(fresh_home)
    joe = users.make("pfout")
    maildir = joe.maildir()
    tree = start_tree(fresh_home)
    server = SmtpServer(fresh_home)
    postfix = None
    try:
        postfix = Postfix(hostname="postfix.test",
                          transports={ME: "smtp:[127.0.0.1]:%d" % server.port})
        rcpt = "%s@%s" % (joe.name, ME)
        # 998 bytes: the longest line Postfix's smtp client sends unbroken
        # (smtp_line_length_limit)
        message = body(998)
        done = postfix.sendmail("sender@postfix.test", [rcpt], message)
        assert (done.returncode, done.stderr) == (0, b"")
        until(lambda: maildir_files(maildir), 60, postfix.log, tree.read_log)
        until(lambda: postfix.mailq() == b"Mail queue is empty\n", 30, postfix.mailq, postfix.log)
        until(lambda: b"status=sent" in postfix.log(), 30, postfix.log)
        maillog = postfix.log().decode()
        log = tree.wait_log(rb"^end msg \d+$").decode()
    finally:
        if postfix is not None:
            postfix.stop()
        server.stop()
        tree.stop()
    (path,) = maildir_files(maildir)
    data = read(path)
    assert os.stat(path).st_uid == joe.uid
    # qmail-local's two lines, qmail-queue's, qmail-smtpd's, then Postfix's own
    m = re.match(rb"Return-Path: <sender@postfix.test>\nDelivered-To: %s\n" % rcpt.encode(), data)
    assert m, data[:300]
    rest = data[m.end():]
    q = QMAIL_RECEIVED.match(rest)
    assert q and q.group(1) == b"from network", rest[:200]
    rest = rest[q.end():]
    s = re.match(rb"Received: from unknown \(HELO postfix\.test\) \(127\.0\.0\.1\)\n"
                 rb"  by %s with SMTP; \d+ \w+ \d+ \d\d:\d\d:\d\d -0000\n" % ME.encode(), rest)
    assert s, rest[:200]
    rest = rest[s.end():]
    p = re.match(rb"Received: by postfix\.test \(Postfix, from userid 0\)\n\tid ([0-9A-F]+); [^\n]+\n",
                 rest)
    assert p, rest[:200]
    assert rest[p.end():] == message
    ident = p.group(1).decode()
    sent = re.search(r"postfix/smtp\[\d+\]: %s: to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, "
                     r".*status=sent \(250 ok (\d+) qp (\d+)\)" % (ident, re.escape(rcpt), server.port),
                     maillog)
    assert sent, maillog
    assert re.search(r"^info msg \d+: bytes \d+ from <sender@postfix.test> qp %s uid %d$"
                     % (sent.group(2), uid("qmaild")), log, re.M)


def test_smtp_source_load_into_qmail_smtpd(fresh_home, users):
    """Postfix's smtp-source: 500 messages of 1024 bytes over 10 parallel
    sessions into tcpserver + qmail-smtpd + the qmail-start tree.  All 500
    reach the Maildir, and no qmail-smtpd grows past 60 MB of resident memory."""
    config(fresh_home)
    joe = users.make("load")
    maildir = joe.maildir()
    tree = start_tree(fresh_home)
    server = SmtpServer(fresh_home)
    peak = {}
    uids = set()
    sampling = True

    def sample():
        while sampling:
            for pid in server.children():
                try:
                    st = status(pid)
                except (OSError, ValueError):
                    continue
                if st.get("Name", "").strip() == "qmail-smtpd" and "VmRSS" in st:
                    kb = int(st["VmRSS"].split()[0])
                    peak[pid] = max(peak.get(pid, 0), kb)
                    uids.add(st["Uid"].split()[0])
            time.sleep(0.005)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rcpt = "%s@%s" % (joe.name, ME)
    started = time.monotonic()
    try:
        done = subprocess.run(["/usr/sbin/smtp-source", "-s", "10", "-m", "500", "-l", "1024",
                               "-f", "sender@postfix.test", "-t", rcpt,
                               "127.0.0.1:%d" % server.port], capture_output=True, timeout=300)
        assert (done.returncode, done.stderr) == (0, b""), done.stderr
        sent = time.monotonic() - started
        until(lambda: len(os.listdir(os.path.join(maildir, "new"))) == 500, 300, tree.read_log)
        delivered = time.monotonic() - started
        until(lambda: len(re.findall(rb"^end msg \d+$", tree.read_log(), re.M)) == 500, 60,
              tree.read_log)
        log = tree.read_log().decode()
    finally:
        sampling = False
        sampler.join(10)
        server.stop()
        tree.stop()
    print("smtp-source 500 x 1024 bytes, 10 sessions: sent in %.1fs, all in Maildir after %.1fs; "
          "qmail-smtpd sampled %d, peak VmRSS %d kB, median %d kB"
          % (sent, delivered, len(peak), max(peak.values()), sorted(peak.values())[len(peak) // 2]))
    assert len(re.findall(r"^delivery \d+: success: did_1\+0\+0/$", log, re.M)) == 500
    assert peak and max(peak.values()) < 60 * 1024
    assert uids == {str(uid("qmaild"))}
    ids = set()
    bodies = set()
    for path in maildir_files(maildir):
        data = read(path)
        assert data.startswith(b"Return-Path: <sender@postfix.test>\nDelivered-To: %s\n" % rcpt.encode())
        assert b"\n  by %s with SMTP; " % ME.encode() in data
        headers, text = data.split(b"\n\n", 1)
        m = re.search(rb"\nMessage-Id: (<[^>\n]+>)(\n|$)", headers)
        assert m, headers
        ids.add(m.group(1))
        # smtp-source's body (-l 1024): numbered lines of X, the same in every
        # message, here with LF line ends
        assert re.fullmatch(rb"([0-9]X+\n)+X*\n", text), text[:200]
        bodies.add(text)
    assert len(ids) == 500
    (text,) = bodies
    assert len(text) > 1000
