"""qmail-remote (spec/remote.md §3-§10): the installed program, run as qmailr,
against a scripted SMTP peer, Postfix's smtp-sink and dnsmasq on loopback."""
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

import pytest

from conftest import SRC, install, need_root, public_tmpdir, uid
from remote_peers import DROP, Dnsmasq, Peer, ServFail, SmtpSink
from pyqmail import ipme as qdns_ipme
from pyqmail import qdns
from pyqmail import qmail_remote as remote_module

MX_A, MX_B, MX_C = "127.0.25.1", "127.0.25.2", "127.0.25.3"

DNS_RECORDS = [
    # pref.test: MX 10 -> MX_A, MX 20 -> MX_B
    "--mx-host=pref.test,mx-a.pref.test,10", "--mx-host=pref.test,mx-b.pref.test,20",
    "--host-record=mx-a.pref.test," + MX_A, "--host-record=mx-b.pref.test," + MX_B,
    # loop.test: our own address is the best MX
    "--mx-host=loop.test,self.loop.test,10", "--mx-host=loop.test,mx-b.pref.test,20",
    "--host-record=self.loop.test,127.0.0.1",
    # backup.test: we are the backup MX, MX_C the better one
    "--mx-host=backup.test,mx-c.backup.test,5", "--mx-host=backup.test,self.loop.test,10",
    "--host-record=mx-c.backup.test," + MX_C,
    # aonly.test: no MX, an A record
    "--host-record=aonly.test," + MX_A,
    # alias.test: a CNAME (qmail 1.03 would have rewritten recipients)
    "--cname=alias.test,mx-a.pref.test",
    # six.test: only an AAAA record
    "--host-record=six.test,::1",
]
# big.test: so many MX records that the answer passes 512 bytes (TCP retry)
for i in range(30):
    DNS_RECORDS.append("--mx-host=big.test,mx-%02d.a-rather-long-name-for-an-exchanger.big.test,%d"
                       % (i, 50 + i))
DNS_RECORDS.append("--host-record=mx-00.a-rather-long-name-for-an-exchanger.big.test," + MX_C)


@pytest.fixture(scope="module")
def home():
    need_root()
    base = public_tmpdir("pyqmail-remote-")
    path = os.path.join(base, "qmail")
    done = install(path)
    assert done.returncode == 0, done.stderr.decode()
    yield path
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_home(request):
    """Each test starts with control/me alone and empty timeout tables."""
    if "home" not in request.fixturenames:
        yield
        return
    path = request.getfixturevalue("home")
    control = os.path.join(path, "control")
    for name in os.listdir(control):
        os.unlink(os.path.join(control, name))
    write_control(path, "me", "me.test\n")
    for table in ("tcpto", "tcpto6"):
        with open(os.path.join(path, "queue/lock", table), "r+b") as f:
            f.write(b"\0" * 1024)
    yield


@pytest.fixture(scope="module")
def dnsmasq():
    server = Dnsmasq(DNS_RECORDS)
    yield server
    server.stop()


@pytest.fixture
def peer():
    peers = []

    def start(**kw):
        p = Peer(**kw)
        peers.append(p)
        return p
    yield start
    for p in peers:
        p.close()


def write_control(home, name, text):
    with open(os.path.join(home, "control", name), "w") as f:
        f.write(text)


def route(home, p, domain="peer.test"):
    write_control(home, "smtproutes", "%s:%s:%d\n" % (domain, p.host, p.port))


def qmail_remote(home, args, message=b"Subject: hi\n\nbody\n", env=None, timeout=60):
    """Run bin/qmail-remote as qmailr with the message on fd 0; its fd 1."""
    tmp = public_tmpdir("pyqmail-msg-")
    try:
        path = os.path.join(tmp, "mess")
        with open(path, "wb") as f:
            f.write(message)
        os.chmod(path, 0o644)
        with open(path, "rb") as f:
            done = subprocess.run([os.path.join(home, "bin/qmail-remote")] + args, stdin=f,
                                  capture_output=True, user=uid("qmailr"), group="qmail",
                                  extra_groups=[], env=dict(env or {}, PATH="/usr/bin:/bin"),
                                  timeout=timeout)
    finally:
        shutil.rmtree(tmp)
    assert done.returncode == 0
    assert done.stderr == b""
    return done.stdout


def said(reply):
    return b"Remote host said: " + reply


OK_END = said(b"250 ok 1709629621 qp 4242\n")


# -- protocol pieces, no I/O -------------------------------------------------

@pytest.mark.parametrize("step", [1, 3, 4096])
def test_reply_parser_multiline_and_leftover(step):
    data = b"250-first\r\n250-second\r\n250 last\r\n220 next\r\n"
    parser = remote_module.Reply()
    used = 0
    while not parser.done:
        used += parser.feed(data[used:used + step][:step])
    assert (parser.code, bytes(parser.text), data[used:]) == \
        (250, b"250-first\n250-second\n250 last\n", b"220 next\r\n")


def test_reply_parser_unchecked_code_and_limit():
    parser = remote_module.Reply()
    parser.feed(b"2x0 " + b"a" * 6000 + b"\r\n")
    # C arithmetic: 'x' - '0' = 72, unsigned; only 5000 bytes of text are kept
    assert parser.done and parser.code == 2 * 100 + 72 * 10 + 0
    assert len(parser.text) == 5000
    parser = remote_module.Reply()
    parser.feed(b" 50 x\n")
    assert parser.code >= 500   # a negative digit wraps to a huge code


@pytest.mark.parametrize("address,sent", [
    (b"a@x.test", b"a@x.test"), (b"a b@x", b'"a b"@x'), (b"x@y@z", b'"x@y"@z'),
    (b"#@[]", b"#@[]"), (b"", b""), (b".a@x", b'".a"@x'), (b"a..b@x", b'"a..b"@x'),
    (b'q"\\@x', b'"q\\"\\\\"@x'), (b"\xe9@x", b'"\xe9"@x'), (b"@x", b'""@x'),
    (b"postmaster", b"postmaster"),
])
def test_addrmangle(address, sent):
    assert remote_module.addrmangle(address) == sent


def test_smtproutes_lookup_order():
    routes = {b"a.b.c": b"one", b".b.c": b"two:2525x", b"": b"def:26",
              b"empty.c": b"", b"[six]": b"x", b"v6.c": b"[IPv6:::1]:2526"}
    find = remote_module.find_route
    assert find(routes, b"a.b.c") == (b"one", 25)
    assert find(routes, b"x.b.c") == (b"two", 2525)
    assert find(routes, b"X.B.C") == (b"two", 2525)   # keys match case-insensitively
    assert find(routes, b"other.org") == (b"def", 26)
    assert find(routes, b"empty.c") is None            # empty value: MX, search stops
    assert find(routes, b"v6.c") == (b"[IPv6:::1]", 2526)
    assert find({b"x": b"[1.2.3.4]"}, b"x") == (b"[1.2.3.4]", 25)
    # text after the bracket that is no port: qmail's first-colon split
    assert find({b"x": b"[r]s:2525"}, b"x") == (b"[r]s", 2525)
    assert find({b"x": b"r:70000"}, b"x") == (b"r", 70000 % 65536)
    assert find({}, b"x") is None


def test_mx_choice_order_and_ties():
    # lowest preference first; four equal MXs come out in different orders for
    # different seeds (qmail's 32-bit draw), and always all of them
    mx = [(10, b"a"), (5, b"b"), (20, b"c")]
    assert qdns.next_mx(mx, 1)[0] == 1
    orders = set()
    for seed in range(200):
        left = [(10, b"a"), (10, b"b"), (10, b"c"), (10, b"d")]
        order = []
        r = seed * 7919 + (seed << 16)
        while left:
            i, r = qdns.next_mx(left, r)
            order.append(left[i][1])
            left[i] = left[-1]
            left.pop()
        assert sorted(order) == [b"a", b"b", b"c", b"d"]
        orders.add(tuple(order))
    assert len({o[0] for o in orders}) == 4


def test_literals():
    assert qdns.literal(b"1.2.3.4") == (socket.AF_INET, b"\1\2\3\4")
    assert qdns.literal(b"[1.2.3.260]") == (socket.AF_INET, b"\1\2\3\4")
    assert qdns.literal(b"[IPv6:2001:db8::1]") == \
        (socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "2001:db8::1"))
    assert qdns.literal(b"1.2.3") is None
    assert qdns.literal(b"example.org") is None


def test_ipme_counts_interfaces_that_are_up():
    # ipme.c: SIOCGIFFLAGS, IFF_UP; tried in a network namespace of our own,
    # whose loopback starts down
    need_root()
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from pyqmail import ipme\n"
              "print(' '.join(ipme.ipv4() + ipme.ipv6()))\n"
              "print(' '.join(ipme.ipv4_fast()))\n" % SRC)
    shell = ("ip addr add 192.0.2.7/24 dev lo && ip -6 addr add fd00::7/128 dev lo && "
             "%s -c \"$1\" && ip link set lo up && %s -c \"$1\"" % (sys.executable, sys.executable))
    # unshare (util-linux) and ip (iproute2, in make test's packages); as root
    # in CI, a network namespace is always ours to make
    done = subprocess.run(["unshare", "-n", "sh", "-c", shell, "sh", script],
                          capture_output=True)
    assert done.returncode == 0, done.stderr
    down, fast_down, up, fast_up = (set(line.split()) for line in done.stdout.decode().splitlines())
    assert "192.0.2.7" not in down and "fd00::7" not in down
    assert "192.0.2.7" in up and "fd00::7" in up
    # qmail-smtpd's rtnetlink version agrees: 127.0.0.1 always, 192.0.2.7 once lo is up
    assert fast_down == {"127.0.0.1"}
    assert fast_up == {"127.0.0.1", "192.0.2.7"}


def test_ipme_fast_agrees_with_siocgifconf():
    """ipv4_fast() (rtnetlink, for qmail-smtpd) and ipv4() (SIOCGIFCONF and
    SIOCGIFFLAGS, as ipme.c) list the same addresses on this host."""
    assert sorted(qdns_ipme.ipv4_fast()) == sorted(qdns_ipme.ipv4())
    assert qdns_ipme.ipv4_fast()[0] == "127.0.0.1"


# -- the program ---------------------------------------------------------------

def test_invoked_improperly(home):
    assert qmail_remote(home, ["peer.test", "a@x.test"]) == \
        b"DI (qmail-remote) was invoked improperly. (#5.3.5)\n\0"


def test_no_helohost_no_me(home):
    os.unlink(os.path.join(home, "control", "me"))
    assert qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"]) == \
        b"ZUnable to read control files. (#4.3.0)\n\0"


def test_byte_exact_arrival(home, peer):
    p = peer()
    route(home, p)
    write_control(home, "helohost", "helo.test\n")
    long_line = b"x" * 100000
    message = (b"Subject: \xe9t\xe9\n\n.leading dot\n..two\n.\nmid.dot\r\nraw cr\rhere\n"
               + long_line + b"\n\0nul\n")
    out = qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"], message)
    assert out == b"r\0K127.0.0.1 accepted message.\n" + OK_END + b"\0"
    session, = p.sessions
    assert session.lines == [b"EHLO helo.test\r\n", b"MAIL FROM:<a@x.test>\r\n",
                             b"RCPT TO:<b@peer.test>\r\n", b"DATA\r\n", b"QUIT\r\n"]
    assert session.data == (b"Subject: \xe9t\xe9\r\n\r\n..leading dot\r\n...two\r\n..\r\n"
                            b"mid.dot\r\r\nraw cr\rhere\r\n" + long_line + b"\r\n\0nul\r\n.\r\n")


def test_message_without_final_newline(home, peer):
    p = peer()
    route(home, p)
    out = qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"], b"Subject: x\n\nno end")
    assert out == b"r\0DSMTP cannot transfer messages with partial final lines. (#5.6.2)\n\0"
    wait_closed(p)
    assert p.sessions[0].data is None   # no final dot was sent
    assert b"QUIT\r\n" not in p.sessions[0].lines


def test_empty_message(home, peer):
    p = peer()
    route(home, p)
    out = qmail_remote(home, ["peer.test", "", "b@peer.test"], b"")
    assert out == b"r\0K127.0.0.1 accepted message.\n" + OK_END + b"\0"
    assert p.sessions[0].data == b".\r\n"
    assert p.sessions[0].lines[1] == b"MAIL FROM:<>\r\n"


def wait_closed(p, timeout=10):
    deadline = time.monotonic() + timeout
    while any(t.is_alive() for t in p.threads):
        assert time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("ehlo", [Peer.DEFAULTS["EHLO"], b"250 peer.test\r\n"],
                         ids=["pipelining", "one-by-one"])
def test_one_of_three_recipients_rejected(home, peer, ehlo):
    p = peer(replies={"EHLO": ehlo, "RCPT b2@peer.test": b"550-no\r\n550 such user\r\n"})
    route(home, p)
    out = qmail_remote(home, ["peer.test", "a@x.test", "b1@peer.test", "b2@peer.test",
                              "b3@peer.test"])
    assert out == (b"r\0h127.0.0.1 does not like recipient.\n" + said(b"550-no\n550 such user\n")
                   + b"\0r\0K127.0.0.1 accepted message.\n" + OK_END + b"\0")
    assert p.sessions[0].data is not None


@pytest.mark.parametrize("ehlo", [Peer.DEFAULTS["EHLO"], b"250 peer.test\r\n"],
                         ids=["pipelining", "one-by-one"])
def test_every_recipient_refused_gives_up(home, peer, ehlo):
    p = peer(replies={"EHLO": ehlo, "RCPT": b"450 try later\r\n",
                      "RCPT b2@peer.test": b"553 no\r\n", "DATA": b"554 no valid recipients\r\n"})
    route(home, p)
    out = qmail_remote(home, ["peer.test", "a@x.test", "b1@peer.test", "b2@peer.test"])
    assert out == (b"s127.0.0.1 does not like recipient.\n" + said(b"450 try later\n") + b"\0"
                   b"h127.0.0.1 does not like recipient.\n" + said(b"553 no\n") + b"\0"
                   b"DGiving up on 127.0.0.1.\n\0")


@pytest.mark.parametrize("key,reply,out", [
    ("greeting", b"421 busy\r\n", b"ZConnected to 127.0.0.1 but greeting failed.\n"
                                  b"Remote host said: 421 busy\n"),
    ("MAIL", b"451 greylisted\r\n", b"ZConnected to 127.0.0.1 but sender was rejected.\n"
                                    b"Remote host said: 451 greylisted\n"),
    ("MAIL", b"553 sender unknown\r\n", b"DConnected to 127.0.0.1 but sender was rejected.\n"
                                        b"Remote host said: 553 sender unknown\n"),
    ("DATA", b"451 not now\r\n", b"Z127.0.0.1 failed on DATA command.\n"
                                 b"Remote host said: 451 not now\n"),
    ("DATA", b"554 never\r\n", b"D127.0.0.1 failed on DATA command.\n"
                               b"Remote host said: 554 never\n"),
    ("END", b"452 disk full\r\n", b"Z127.0.0.1 failed after I sent the message.\n"
                                  b"Remote host said: 452 disk full\n"),
    ("END", b"552 too big\r\n", b"D127.0.0.1 failed after I sent the message.\n"
                                b"Remote host said: 552 too big\n"),
])
def test_4xx_and_5xx(home, peer, key, reply, out):
    p = peer(replies={"EHLO": b"250 peer.test\r\n", key: reply})
    route(home, p)
    got = qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"])
    prefix = b"r\0" if key in ("DATA", "END") else b""
    assert got == prefix + out + b"\0"
    wait_closed(p)
    assert p.sessions[0].lines[-1] == b"QUIT\r\n"


def test_ehlo_refused_falls_back_to_helo(home, peer):
    p = peer(replies={"EHLO": b"500 what?\r\n"})
    route(home, p)
    out = qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"])
    assert out == b"r\0K127.0.0.1 accepted message.\n" + OK_END + b"\0"
    assert p.sessions[0].lines[:2] == [b"EHLO me.test\r\n", b"HELO me.test\r\n"]


def test_helo_rejected(home, peer):
    p = peer(replies={"EHLO": b"500 what?\r\n", "HELO": b"501 bad name\r\n"})
    route(home, p)
    out = qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"])
    assert out == (b"ZConnected to 127.0.0.1 but my name was rejected.\n"
                   b"Remote host said: 501 bad name\n\0")


def test_size_offered(home, peer):
    p = peer(replies={"EHLO": b"250-peer.test\r\n250 SIZE 10000000\r\n"})
    route(home, p)
    message = b"Subject: x\n\n.a\nb\n"
    qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"], message)
    assert p.sessions[0].lines[1] == b"MAIL FROM:<a@x.test> SIZE=%d\r\n" % (len(message) + 4)


def test_quoted_addresses(home, peer):
    p = peer()
    route(home, p)
    qmail_remote(home, ["peer.test", "a b@x.test", "c\"d@peer.test"])
    assert p.sessions[0].lines[1:3] == [b'MAIL FROM:<"a b"@x.test>\r\n',
                                        b'RCPT TO:<"c\\"d"@peer.test>\r\n']


@pytest.mark.parametrize("key,duplicate", [("RCPT", b""), ("END", b"Possible duplicate! ")])
def test_dropped_connection(home, peer, key, duplicate):
    p = peer(replies={key: DROP})
    route(home, p)
    out = qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"])
    prefix = b"r\0" if key == "END" else b""
    assert out == prefix + b"ZConnected to 127.0.0.1 but connection died. %s(#4.4.2)\n\0" % duplicate


def test_timeoutremote(home, peer):
    p = peer(delay={"MAIL": 5})
    route(home, p)
    write_control(home, "timeoutremote", "1\n")
    start = time.monotonic()
    out = qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"])
    assert out == b"ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n\0"
    assert time.monotonic() - start < 4.5


def test_timeouts_are_c_ints(home, peer):
    # control_readint() stores the number in an int: 4294967295 is -1, and
    # select() refuses a negative wait, so every read dies at once
    p = peer()
    route(home, p)
    write_control(home, "timeoutremote", "4294967295\n")
    out = qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"])
    assert out == b"ZConnected to 127.0.0.1 but connection died. (#4.4.2)\n\0"
    # far beyond a C int (negative once cut to 32 bits): no internal error
    write_control(home, "timeoutremote", "99999999999999999999999\n")
    assert qmail_remote(home, ["peer.test", "a@x.test", "b@peer.test"]) == out


def read_tcpto(home, name="tcpto"):
    with open(os.path.join(home, "queue/lock", name), "rb") as f:
        return f.read()


def qmail_tcpto(home):
    done = subprocess.run([os.path.join(home, "bin/qmail-tcpto")], capture_output=True,
                          user=uid("qmailr"), group="qmail", extra_groups=[])
    assert done.returncode == 0, done.stdout
    return done.stdout


NOCONN = b"ZSorry, I wasn't able to establish an SMTP connection. (#4.4.1)\n\0"


def test_refused_and_timeout_go_to_tcpto_and_back(home, peer):
    # a listener whose backlog is full drops SYNs: connecting times out
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    held = socket.create_connection(("127.0.0.1", port))
    try:
        write_control(home, "smtproutes", "slow.test:127.0.0.1:%d\n" % port)
        write_control(home, "timeoutconnect", "1\n")
        args = ["slow.test", "a@x.test", "b@slow.test"]
        # first timeout: a record with count 1
        assert qmail_remote(home, args) == NOCONN
        table = read_tcpto(home)
        assert table[:5] == b"\x7f\0\0\1\1" and table[16:] == b"\0" * (1024 - 16)
        when = struct.unpack("<I", table[8:12])[0]
        assert abs(when - time.time()) < 5
        # a second timeout within 2 minutes counts once
        assert qmail_remote(home, args) == NOCONN
        assert read_tcpto(home) == table
        # one more timeout after 2 minutes: count 2, and the host is skipped
        with open(os.path.join(home, "queue/lock/tcpto"), "r+b") as f:
            f.seek(8)
            f.write(struct.pack("<I", when - 200))
        assert qmail_remote(home, args) == NOCONN
        assert read_tcpto(home)[4] == 2
        start = time.monotonic()
        assert qmail_remote(home, args) == NOCONN    # skipped: no attempt, no wait
        assert time.monotonic() - start < 1
        assert read_tcpto(home)[4] == 2
        line = qmail_tcpto(home)
        assert line.startswith(b"127.0.0.1 timed out ") and \
            line.endswith(b" seconds ago; # recent timeouts: 2\n")
        # qmail-tcpok forgets it; the next attempt is made again
        done = subprocess.run([os.path.join(home, "bin/qmail-tcpok")], capture_output=True)
        assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")
        assert read_tcpto(home) == b"\0" * 1024
        assert qmail_tcpto(home) == b""
    finally:
        held.close()
        listener.close()
    # a refused connection clears the count of a host that has a record
    with open(os.path.join(home, "queue/lock/tcpto"), "r+b") as f:
        f.write(b"\x7f\0\0\1\1\0\0\0" + struct.pack("<I", int(time.time())))
    assert qmail_remote(home, ["slow.test", "a@x.test", "b@slow.test"]) == NOCONN
    assert read_tcpto(home)[:5] == b"\x7f\0\0\1\0"
    # and adds nothing for a host without one
    write_control(home, "smtproutes", "slow.test:127.0.0.9:%d\n" % port)
    assert qmail_remote(home, ["slow.test", "a@x.test", "b@slow.test"]) == NOCONN
    assert read_tcpto(home)[16:] == b"\0" * (1024 - 16)


def test_mx_preference_order_and_fallback(home, peer, dnsmasq):
    a = peer(host=MX_A, port=25)
    b = peer(host=MX_B, port=25)
    out = qmail_remote(home, ["pref.test", "a@x.test", "b@pref.test"], env=dnsmasq.env())
    assert out == b"r\0K%s accepted message.\n" % MX_A.encode() + OK_END + b"\0"
    assert (len(a.sessions), len(b.sessions)) == (1, 0)
    a.close()   # the best MX refuses connections: the next one gets the mail
    out = qmail_remote(home, ["pref.test", "a@x.test", "b@pref.test"], env=dnsmasq.env())
    assert out == b"r\0K%s accepted message.\n" % MX_B.encode() + OK_END + b"\0"
    assert len(b.sessions) == 1


def test_a_record_when_no_mx(home, peer, dnsmasq):
    a = peer(host=MX_A, port=25)
    out = qmail_remote(home, ["aonly.test", "a@x.test", "b@aonly.test"], env=dnsmasq.env())
    assert out.startswith(b"r\0K%s accepted message.\n" % MX_A.encode())
    assert len(a.sessions) == 1


def test_no_cname_rewriting(home, peer, dnsmasq):
    a = peer(host=MX_A, port=25)
    out = qmail_remote(home, ["alias.test", "a@x.test", "b@alias.test"], env=dnsmasq.env())
    assert out.startswith(b"r\0K%s accepted message.\n" % MX_A.encode())
    assert a.sessions[0].lines[2] == b"RCPT TO:<b@alias.test>\r\n"


def test_answer_over_512_bytes(home, peer, dnsmasq):
    c = peer(host=MX_C, port=25)
    out = qmail_remote(home, ["big.test", "a@x.test", "b@big.test"], env=dnsmasq.env())
    assert out.startswith(b"r\0K%s accepted message.\n" % MX_C.encode())
    assert len(c.sessions) == 1


AMBIGMX = (b"DSorry. Although I'm listed as a best-preference MX or A for that host,\n"
           b"it isn't in my control/locals file, so I don't treat it as local. (#5.4.6)\n\0")


def test_route_to_ourselves_is_a_loop(home, peer, dnsmasq):
    b = peer(host=MX_B, port=25)
    # we are loop.test's best MX: not even the worse MX_B may be used
    assert qmail_remote(home, ["loop.test", "a@x.test", "b@loop.test"],
                        env=dnsmasq.env()) == AMBIGMX
    assert qmail_remote(home, ["[127.0.0.1]", "a@x.test", "b@[127.0.0.1]"],
                        env=dnsmasq.env()) == AMBIGMX
    assert b.sessions == []


def test_backup_mx_forwards_to_better_mx_only(home, peer, dnsmasq):
    c = peer(host=MX_C, port=25)
    out = qmail_remote(home, ["backup.test", "a@x.test", "b@backup.test"], env=dnsmasq.env())
    assert out.startswith(b"r\0K%s accepted message.\n" % MX_C.encode())
    c.close()
    assert qmail_remote(home, ["backup.test", "a@x.test", "b@backup.test"],
                        env=dnsmasq.env()) == NOCONN


def test_smtproutes_route_to_ourselves_is_obeyed(home, peer):
    p = peer()
    write_control(home, "smtproutes", ":127.0.0.1:%d\n" % p.port)   # the default route
    out = qmail_remote(home, ["anywhere.test", "a@x.test", "b@anywhere.test"])
    assert out.startswith(b"r\0K127.0.0.1 accepted message.\n")


def test_unknown_host(home, dnsmasq):
    assert qmail_remote(home, ["nohost.test", "a@x.test", "b@nohost.test"],
                        env=dnsmasq.env()) == \
        b"DSorry, I couldn't find any host named nohost.test. (#5.1.2)\n\0"
    write_control(home, "smtproutes", "x.test:no\x01relay.test\n")
    assert qmail_remote(home, ["x.test", "a@x.test", "b@x.test"], env=dnsmasq.env()) == \
        b"DSorry, I couldn't find any host named no?relay.test. (#5.1.2)\n\0"


def test_dns_server_failure_is_temporary(home):
    server = ServFail()
    try:
        out = qmail_remote(home, ["pref.test", "a@x.test", "b@pref.test"], env=server.env())
    finally:
        server.stop()
    assert out == b"ZSorry, I couldn't find any host by that name. (#4.1.2)\n\0"
    assert server.queries >= 1


def test_ipv6_literal_route_and_aaaa(home, peer, dnsmasq):
    if "::1" not in qdns_ipme.ipv6() or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no ::1 here")
    p = peer(host="::1")
    write_control(home, "smtproutes", "v6.test:[IPv6:::1]:%d\nname6.test:six.test:%d\n"
                  % (p.port, p.port))
    out = qmail_remote(home, ["v6.test", "a@x.test", "b@v6.test"], env=dnsmasq.env())
    assert out == b"r\0K::1 accepted message.\n" + OK_END + b"\0"
    out = qmail_remote(home, ["name6.test", "a@x.test", "b@name6.test"], env=dnsmasq.env())
    assert out == b"r\0K::1 accepted message.\n" + OK_END + b"\0"
    assert len(p.sessions) == 2
    assert read_tcpto(home, "tcpto6") == b"\0" * 1024


def test_smtp_sink_peer(home):
    dump_dir = public_tmpdir("pyqmail-sink-")
    sink = SmtpSink(dump_dir)
    try:
        write_control(home, "smtproutes", "sink.test:127.0.0.1:%d\n" % sink.port)
        message = b"Subject: to the sink\n\n.dot\n\xff\xfe8bit\n"
        out = qmail_remote(home, ["sink.test", "a@x.test", "b@sink.test", "c@sink.test"], message)
        dumps = os.listdir(dump_dir)
        assert len(dumps) == 1
        with open(os.path.join(dump_dir, dumps[0]), "rb") as f:
            dump = f.read()
    finally:
        sink.stop()
        shutil.rmtree(dump_dir)
    assert out.startswith(b"r\0r\0K127.0.0.1 accepted message.\nRemote host said: 250 ")
    assert b"X-Mail-Args: <a@x.test>" in dump
    assert b"X-Rcpt-Args: <b@sink.test>\nX-Rcpt-Args: <c@sink.test>\n" in dump
    # smtp-sink un-stuffs the dot and ends its dump file with one more LF
    assert dump.endswith(b"\nSubject: to the sink\n\n.dot\n\xff\xfe8bit\n\n")
