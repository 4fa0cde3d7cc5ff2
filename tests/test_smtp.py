"""pyqmail.smtp: qmail-smtpd's conversation, fed whole, in small steps and
pipelined (spec/smtpd.md)."""
import random

import pytest

from pyqmail import date822, smtp

STEPS = [1, 3, 4096]
NOW = 1709629621          # 5 Mar 2024 09:07:01 UTC
RECEIVED = (b"Received: from mx.example.org (HELO client.example.org) (192.0.2.7)\n"
            b"  by host.example.com with SMTP; 5 Mar 2024 09:07:01 -0000\n")
LF_REPLY = b"451 See http://pobox.com/~djb/docs/smtplf.html.\r\n"


class FakeQueue:
    """qmail.Qmail's interface, recording what qmail-queue would have read."""

    def __init__(self, result=b"", open_error=None):
        self.message = bytearray()
        self.envelope = []
        self.failed = False
        self.closed = False
        self.result = result
        self.open_error = open_error
        self.qp = 4242

    def open(self):
        if self.open_error:
            raise self.open_error

    def put(self, data):
        assert not self.closed
        if not self.failed:
            self.message += data

    def from_(self, sender):
        if not self.failed:
            self.envelope.append(b"F" + sender)

    def to(self, rcpt):
        if not self.failed:
            self.envelope.append(b"T" + rcpt)

    def fail(self):
        self.failed = True

    def close(self):
        self.closed = True
        if self.failed:
            return b"Zqq read error (#4.3.0)"
        return self.result

    @property
    def queued(self):
        return self.closed and not self.failed and not self.result


class Harness:
    def __init__(self, result=b"", open_error=None, **kw):
        kw.setdefault("remotehost", b"mx.example.org")
        kw.setdefault("remoteip", b"192.0.2.7")
        kw.setdefault("local", b"host.example.com")
        self.config = smtp.Config(kw.pop("greeting", b"host.example.com"), **kw)
        self.queues = []
        self.result = result
        self.open_error = open_error
        self.session = smtp.Session(self.config, self.new_queue, lambda: NOW)

    def new_queue(self):
        q = FakeQueue(self.result, self.open_error)
        self.queues.append(q)
        return q

    def feed(self, data, step=4096):
        out = b""
        for i in range(0, len(data), step):
            out += self.session.receive(data[i:i + step])
        return out

    @property
    def queued(self):
        return [q for q in self.queues if q.queued]


def converse(data, step=4096, **kw):
    h = Harness(**kw)
    return h, h.feed(data, step)


TRANSACTION = (b"EHLO client.example.org\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\n"
               b"RCPT TO:<b@host.example.com>\r\nRCPT TO:<c@elsewhere.test>\r\nDATA\r\n"
               b"Subject: hi\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n")


def test_greeting():
    assert Harness().session.greet() == b"220 host.example.com ESMTP\r\n"
    assert Harness(greeting=b"a b c").session.greet() == b"220 a b c ESMTP\r\n"
    assert Harness(greeting=b"").session.greet() == b"220  ESMTP\r\n"


@pytest.mark.parametrize("step", STEPS)
def test_worked_session(step):
    """spec/smtpd.md §11, the whole transaction pipelined."""
    h, out = converse(TRANSACTION, step, rcpthosts=[b"host.example.com"])
    assert out == (b"250-host.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
                   b"250 ok\r\n250 ok\r\n"
                   b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
                   b"354 go ahead\r\n250 ok 1709629621 qp 4242\r\n221 host.example.com\r\n")
    (q,) = h.queued
    assert bytes(q.message) == RECEIVED + b"Subject: hi\n\n.leading dot\n"
    assert q.envelope == [b"Fa@example.org", b"Tb@host.example.com"]
    assert h.session.exit_code == 0


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("line, reply", [
    (b"HELO x", b"250 host.example.com\r\n"),
    (b"helo", b"250 host.example.com\r\n"),
    (b"EhLo x", b"250-host.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n"),
    (b"NOOP whatever", b"250 ok\r\n"),
    (b"VRFY root", b"252 send some mail, i'll try my best\r\n"),
    (b"HELP", b"214 qmail home page: http://pobox.com/~djb/qmail.html\r\n"),
    (b"RSET", b"250 flushed\r\n"),
    (b"EXPN x", b"502 unimplemented (#5.5.1)\r\n"),
    (b"STARTTLS", b"502 unimplemented (#5.5.1)\r\n"),
    (b"AUTH PLAIN x", b"502 unimplemented (#5.5.1)\r\n"),
    (b"", b"502 unimplemented (#5.5.1)\r\n"),
    (b"NOOP\tx", b"502 unimplemented (#5.5.1)\r\n"),      # TAB is no separator
    (b"NOOPX", b"502 unimplemented (#5.5.1)\r\n"),
    (b" NOOP", b"502 unimplemented (#5.5.1)\r\n"),
    (b"NOOP\0junk", b"250 ok\r\n"),                      # a NUL ends the line
    (b"NO\0OP", b"502 unimplemented (#5.5.1)\r\n"),
    (b"RCPT TO:<a@b>", b"503 MAIL first (#5.5.1)\r\n"),
    (b"DATA", b"503 MAIL first (#5.5.1)\r\n"),
    (b"MAIL FROM:<a@b>\r\nDATA", b"250 ok\r\n503 RCPT first (#5.5.1)\r\n"),
    (b"MAIL FROM:<a@b>\r\nRSET\r\nRCPT TO:<c@d>", b"250 ok\r\n250 flushed\r\n503 MAIL first (#5.5.1)\r\n"),
    (b"MAIL FROM:<a@b>\r\nHELO x\r\nRCPT TO:<c@d>",
     b"250 ok\r\n250 host.example.com\r\n503 MAIL first (#5.5.1)\r\n"),
    (b"RCPT TO:<a@b>\nNOOP", b"503 MAIL first (#5.5.1)\r\n250 ok\r\n"),  # bare LF ends commands
])
def test_command_replies(line, reply, step):
    h, out = converse(line + b"\r\n", step)
    assert out == reply
    assert h.session.exit_code is None


@pytest.mark.parametrize("step", STEPS)
def test_quit_ends_session_and_ignores_the_rest(step):
    h, out = converse(b"QUIT\r\nNOOP\r\n", step, greeting=b"g h")
    assert out == b"221 g h\r\n"
    assert h.session.exit_code == 0


def test_eof_exits_1_silently():
    h = Harness()
    assert h.feed(b"NOOP") == b""
    assert h.session.receive(b"") == b""
    assert h.session.exit_code == 1


def test_timeout_reply():
    h = Harness()
    assert h.session.timeout() == b"451 timeout (#4.4.2)\r\n"
    assert h.session.exit_code == 1


@pytest.mark.parametrize("arg, addr", [
    (b"FROM:<>", b""),
    (b"FROM: joe@x SIZE=5", b"joe@x"),
    (b"FROM:joe@x", b"joe@x"),
    (b"FROM:<@hop1,@hop2:joe@x>", b"joe@x"),
    (b"FROM:<@hop1>", b""),
    (b'FROM:<"j o e"@x>', b"j o e@x"),
    (b"FROM:<a\\>b@x>", b"a>b@x"),
    (b"FROM:<a@b", b"a@b"),
    (b"foo@x", b""),
    (b"FROM:<a@b> SIZE=10", b"a@b"),
    (b"FROM: <a@b>", b"a@b"),
    (b'FROM:<"a>b"@x>', b"a>b@x"),
    (b"FROM:<\xe9@x>", b"\xe9@x"),
    (b"FROM:<a@b@c>", b"a@b@c"),
    (b"x<y<z>", b"y<z"),
])
def test_address_parsing(arg, addr):
    assert smtp.parse_address(arg, None, frozenset()) == addr


def test_address_length_bound():
    assert smtp.parse_address(b"<" + b"a" * 899 + b">", None, frozenset()) == b"a" * 899
    assert smtp.parse_address(b"<" + b"a" * 900 + b">", None, frozenset()) is None
    h, out = converse(b"MAIL FROM:<" + b"a" * 900 + b">\r\nRCPT TO:<" + b"b" * 900 + b">\r\n")
    assert out == b"555 syntax error (#5.5.4)\r\n503 MAIL first (#5.5.1)\r\n"


def test_localiphost():
    ips = frozenset({(127, 0, 0, 1), (0, 0, 0, 0)})
    assert smtp.parse_address(b"<u@[127.0.0.1]>", b"lip.example", ips) == b"u@lip.example"
    assert smtp.parse_address(b"<u@[127.0.0.257]>", b"lip.example", ips) == b"u@lip.example"
    assert smtp.parse_address(b"<u@[0.0.0.0]>", b"lip.example", ips) == b"u@lip.example"
    assert smtp.parse_address(b"<u@[10.0.0.1]>", b"lip.example", ips) == b"u@[10.0.0.1]"
    assert smtp.parse_address(b"<u@[127.0.0.1]x>", b"lip.example", ips) == b"u@[127.0.0.1]x"
    assert smtp.parse_address(b"<u@[127.0.0]>", b"lip.example", ips) == b"u@[127.0.0]"
    assert smtp.parse_address(b"<u@[127.0.0.1]>", None, ips) == b"u@[127.0.0.1]"
    h, out = converse(b"MAIL FROM:<a@b>\r\nRCPT TO:<u@[127.0.0.1]>\r\nDATA\r\n.\r\n",
                      liphost=b"lip.example", local_ips=ips, rcpthosts=[b"lip.example"])
    assert out.endswith(b"250 ok 1709629621 qp 4242\r\n")
    assert h.queued[0].envelope == [b"Fa@b", b"Tu@lip.example"]


@pytest.mark.parametrize("step", STEPS)
def test_rcpthosts(step):
    more = {b"more.example", b".sub.more.example"}
    lookups = []

    def morercpthosts(key):
        lookups.append(key)
        return key in more
    rcpts = [b"<a@Example.COM>", b"<a@x.example.com>", b"<a@sub.example.net>", b"<a@example.net>",
             b"<a@y.sub.example.net>", b"<localonly>", b"<a@>", b"<a@more.example>", b"<a@x.sub.more.example>",
             b"<a@b@example.com>", b"<a@example.com@evil.test>", b"<a@xexample.com>"]
    data = b"MAIL FROM:<s@x>\r\n" + b"".join(b"RCPT TO:%s\r\n" % r for r in rcpts)
    h, out = converse(data, step, rcpthosts=[b"EXAMPLE.com", b".sub.example.net"],
                      morercpthosts=morercpthosts)
    no = b"553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)\r\n"
    ok = b"250 ok\r\n"
    assert out == ok + ok + no + no + no + ok + ok + no + ok + ok + ok + no + no
    assert b"x.sub.more.example" in lookups and b".sub.more.example" in lookups


def test_no_rcpthosts_allows_everything():
    h, out = converse(b"MAIL FROM:<s@x>\r\nRCPT TO:<a@anywhere.test>\r\nRCPT TO:<a@>\r\n")
    assert out == b"250 ok\r\n250 ok\r\n250 ok\r\n"


def test_morercpthosts_read_error_is_fatal():
    def broken(key):
        raise smtp.ControlsUnreadable()
    h, out = converse(b"MAIL FROM:<s@x>\r\nRCPT TO:<a@b.test>\r\nNOOP\r\n",
                      rcpthosts=[b"x.test"], morercpthosts=broken)
    assert out == b"250 ok\r\n421 unable to read controls (#4.3.0)\r\n"
    assert h.session.exit_code == 1


@pytest.mark.parametrize("step", STEPS)
def test_relayclient_appended_and_rcpthosts_skipped(step):
    h, out = converse(b"MAIL FROM:<s@x>\r\nRCPT TO:<a@far.test>\r\nRCPT TO:<b>\r\nDATA\r\nx\r\n.\r\n",
                      step, rcpthosts=[b"near.test"], relayclient=b"@relay")
    assert out.startswith(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go ahead\r\n250 ok ")
    assert h.queued[0].envelope == [b"Fs@x", b"Ta@far.test@relay", b"Tb@relay"]
    h, out = converse(b"MAIL FROM:<s@x>\r\nRCPT TO:<a@far.test>\r\n",
                      rcpthosts=[b"near.test"], relayclient=b"")
    assert out == b"250 ok\r\n250 ok\r\n"


@pytest.mark.parametrize("step", STEPS)
def test_badmailfrom(step):
    bmf = b"553 sorry, your envelope sender is in my badmailfrom list (#5.7.1)\r\n"
    for sender, barred in [(b"spam@evil.test", True), (b"SPAM@Evil.Test", True),
                           (b"x@bad.test", True), (b"x@BAD.TEST", True), (b"x@sub.bad.test", False),
                           (b"good@evil.test", False), (b"", False), (b"bad.test", False)]:
        h, out = converse(b"MAIL FROM:<%s>\r\nRCPT TO:<a@b>\r\nDATA\r\n" % sender, step,
                          badmailfrom=[b"spam@evil.test", b"@bad.test"])
        if barred:
            assert out == b"250 ok\r\n" + bmf + b"503 RCPT first (#5.5.1)\r\n"
        else:
            assert out == b"250 ok\r\n250 ok\r\n354 go ahead\r\n"


def test_second_mail_restarts_transaction():
    h, out = converse(b"MAIL FROM:<a@x>\r\nRCPT TO:<r1@y>\r\nMAIL FROM:<b@x>\r\nRCPT TO:<r2@y>\r\n"
                      b"DATA\r\nhi\r\n.\r\nDATA\r\n")
    assert out.endswith(b"250 ok 1709629621 qp 4242\r\n503 MAIL first (#5.5.1)\r\n")
    assert h.queued[0].envelope == [b"Fb@x", b"Tr2@y"]


def test_ten_thousand_recipients():
    data = b"MAIL FROM:<a@x>\r\n" + b"".join(b"RCPT TO:<r%d@y>\r\n" % i for i in range(10000))
    h, out = converse(data + b"DATA\r\n.\r\n")
    assert out.count(b"250 ok\r\n") == 10001
    assert len(h.queued[0].envelope) == 10001


# ---- the Received line

@pytest.mark.parametrize("kw, helo, line", [
    ({}, b"client.example.org", RECEIVED),
    ({}, None, b"Received: from mx.example.org (192.0.2.7)\n  by host.example.com with SMTP; "
               b"5 Mar 2024 09:07:01 -0000\n"),
    ({}, b"MX.Example.ORG", b"Received: from mx.example.org (192.0.2.7)\n  by host.example.com "
                            b"with SMTP; 5 Mar 2024 09:07:01 -0000\n"),
    ({}, b"", b"Received: from mx.example.org (HELO ) (192.0.2.7)\n  by host.example.com with SMTP; "
              b"5 Mar 2024 09:07:01 -0000\n"),
    ({"remoteinfo": b"joe"}, None, b"Received: from mx.example.org (joe@192.0.2.7)\n  by "
                                  b"host.example.com with SMTP; 5 Mar 2024 09:07:01 -0000\n"),
    ({"remotehost": b"unknown", "remoteip": b"unknown", "local": b"unknown"}, None,
     b"Received: from unknown (unknown)\n  by unknown with SMTP; 5 Mar 2024 09:07:01 -0000\n"),
    ({"remoteinfo": b"j o(e)\xff"}, b"[1.2.3.4] <x>\t\"y\"",
     b"Received: from mx.example.org (HELO ?1.2.3.4???x???y?) (j?o?e??@192.0.2.7)\n  by "
     b"host.example.com with SMTP; 5 Mar 2024 09:07:01 -0000\n"),
    ({}, b"a%b+c/d=e:f-g@h_i", b"Received: from mx.example.org (HELO a%b+c/d=e:f-g@h?i) "
                             b"(192.0.2.7)\n  by host.example.com with SMTP; 5 Mar 2024 09:07:01 -0000\n"),
])
def test_received_line(kw, helo, line):
    h = Harness(**kw)
    data = b"" if helo is None else b"HELO " + helo + b"\r\n"
    h.feed(data + b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n.\r\n")
    assert bytes(h.queued[0].message) == line


def test_date_format():
    assert date822.date822fmt(0) == b"1 Jan 1970 00:00:00 -0000"
    assert date822.date822fmt(1709629621) == b"5 Mar 2024 09:07:01 -0000"
    assert date822.date822fmt(1735689599) == b"31 Dec 2024 23:59:59 -0000"


# ---- DATA: decoding, end of data, bare LF, smuggling

def reference_blast(body: bytes):
    """blast() of qmail-smtpd.c transcribed byte by byte: (message, hops,
    consumed) or (None, 0, consumed) for a stray newline; None consumed if the
    input ran out first."""
    out = bytearray()
    state, hops, inheader, pos = 1, 0, True, 0
    mx = my = mz = True
    for i, ch in enumerate(body):
        if inheader:
            if pos < 9:
                if ch not in b"delivered"[pos:pos + 1] + b"DELIVERED"[pos:pos + 1]:
                    mz = False
                if mz and pos == 8:
                    hops += 1
                if pos < 8:
                    if ch not in b"received"[pos:pos + 1] + b"RECEIVED"[pos:pos + 1]:
                        mx = False
                    if mx and pos == 7:
                        hops += 1
                if pos < 2 and ch != b"\r\n"[pos]:
                    my = False
                if my and pos == 1:
                    inheader = False
                pos += 1
            if ch == 10:
                pos, mx, my, mz = 0, True, True, True
        if state == 0:
            if ch == 10:
                return None, 0, i + 1
            if ch == 13:
                state = 4
                continue
        elif state == 1:
            if ch == 10:
                return None, 0, i + 1
            if ch == 46:
                state = 2
                continue
            if ch == 13:
                state = 4
                continue
            state = 0
        elif state == 2:
            if ch == 10:
                return None, 0, i + 1
            if ch == 13:
                state = 3
                continue
            state = 0
        elif state == 3:
            if ch == 10:
                return bytes(out), hops, i + 1
            out += b".\r"
            if ch == 13:
                state = 4
                continue
            state = 0
        elif state == 4:
            if ch == 10:
                state = 1
            elif ch != 13:
                out += b"\r"
                state = 0
        out.append(ch)
    return bytes(out), hops, None


def send_body(body, step=4096, **kw):
    h = Harness(**kw)
    head = h.feed(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert head == b"250 ok\r\n250 ok\r\n354 go ahead\r\n"
    return h, h.feed(body, step)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("body, stored", [
    (b".\r\n", b""),
    (b"a\r\n.\r\n", b"a\n"),
    (b"..x\r\n.x\r\n.\r\n", b".x\nx\n"),
    (b"a\rb\r\n.\r\n", b"a\rb\n"),
    (b"a\r\r\n.\r\n", b"a\r\n"),
    (b"\r\r\r\n.\r\n", b"\r\r\n"),
    (b".\r.\r\n.\r\n", b".\r.\n"),          # line-start "." CR then more
    (b".\rx\r\n.\r\n", b".\rx\n"),
    (b".\r\r\n.\r\n", b".\r\n"),
    (b"\r.\r\n.\r\n", b"\r.\n"),
    (b"a\r\n\r.\r\r\n.\r\n", b"a\n\r.\r\n"),
    (b"\x00\xff\xe9\x80 8bit\r\n.\r\n", b"\x00\xff\xe9\x80 8bit\n"),
    (b"a" * 998 + b"\r\n.\r\n", b"a" * 998 + b"\n"),
    (b"x" * 100000 + b"\r\n.\r\n", b"x" * 100000 + b"\n"),
])
def test_data_decoding(body, stored, step):
    h, out = send_body(body, step)
    assert out == b"250 ok 1709629621 qp 4242\r\n"
    assert bytes(h.queued[0].message) == RECEIVED.replace(b" (HELO client.example.org)", b"") + stored


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("body", [
    b"\n", b"a\n", b"a\r\n\n", b".\n", b"a\r\n.\n", b"a\r\n..\n", b"a\r\nb\nc\r\n.\r\n",
])
def test_bare_lf_ends_session(body, step):
    h, out = send_body(body + b"\r\n.\r\nMAIL FROM:<evil@x>\r\n", step)
    assert out == LF_REPLY
    assert h.session.exit_code == 1
    assert h.queued == [] and h.queues[0].closed and h.queues[0].failed


SMUGGLED = (b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nFrom: forged\r\n\r\nsmuggled\r\n")
SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r\n.\n", b"\r.\n", b"\r.\r\n",
             b"\n.\r", b".\n", b"\r\n\r.\r\n", b"\r\n.\r\r\n", b"\r\n\x00.\r\n"]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("variant", SMUGGLING)
def test_smtp_smuggling(variant, step):
    """CVE-2023-51764/5/6: no alternative end-of-data sequence ends a message;
    LF forms kill the session, CR forms are stored literally."""
    body = b"Subject: first\r\n\r\nbody" + variant + SMUGGLED + b".\r\n"
    h, out = send_body(body + b"QUIT\r\n", step)
    assert len(h.queues) == 1
    if b"\n" in variant.replace(b"\r\n", b""):
        assert out == LF_REPLY and h.queued == []
    else:
        (q,) = h.queued
        assert out == b"250 ok 1709629621 qp 4242\r\n221 host.example.com\r\n"
        expected, _, _ = reference_blast(body)
        assert q.message.endswith(expected) and b"smuggled" in q.message
        assert q.envelope == [b"Fa@x", b"Tb@y"]


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_decoder_matches_qmail_blast(step):
    """Random bodies over the bytes that matter, against a transcription of blast()."""
    rng = random.Random(51764)
    alphabet = [b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n.", b"Received:", b"delivered", b"\0"]
    for _ in range(400):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40))) + b"\r\n.\r\n"
        expected, _, consumed = reference_blast(body)
        h, out = send_body(body + b"NOOP\r\n", step)
        if expected is None:
            assert out == LF_REPLY and h.queued == [], body
        else:
            assert out.startswith(b"250 ok 1709629621 qp 4242\r\n"), body
            if consumed == len(body):
                assert out == b"250 ok 1709629621 qp 4242\r\n250 ok\r\n", body
            assert bytes(h.queued[0].message).split(b"-0000\n", 1)[1] == expected, body


@pytest.mark.parametrize("step", STEPS)
def test_hop_counting(step):
    def body(n, line=b"Received: x\r\n"):
        return line * n + b"\r\nbody\r\n.\r\n"
    h, out = send_body(body(99), step)
    assert out.startswith(b"250 ok ")
    for header in (b"Received: x\r\n", b"RECEIVED-SPF: x\r\n", b"Delivered-To: x\r\n",
                   b"deliveredxx\r\n", b"receivedx\r\n"):
        h, out = send_body(body(100, header), step)
        assert out == b"554 too many hops, this message is looping (#5.4.6)\r\n", header
        assert h.queued == []
    # continuation lines, dot-prefixed lines, and lines after the header do not count
    for text in (b"X: y\r\n" + b" Received: x\r\n" * 100 + b"\r\n.\r\n",
                 b".Received: x\r\n" * 100 + b"\r\n.\r\n",
                 b"X: y\r\n\r\n" + b"Received: x\r\n" * 100 + b".\r\n",
                 b"Receive: x\r\n" * 100 + b".\r\n"):
        h, out = send_body(text, step)
        assert out.startswith(b"250 ok "), text


@pytest.mark.parametrize("step", STEPS)
def test_databytes(step):
    h, out = send_body(b"12345678\r\n.\r\n", step, databytes=9)
    assert out.startswith(b"250 ok ")
    h, out = send_body(b"123456789\r\n.\r\nNOOP\r\n", step, databytes=9)
    assert out == (b"552 sorry, that message size exceeds my databytes limit (#5.3.4)\r\n"
                   b"250 ok\r\n")
    assert h.queued == []
    # dot removal and CRLF -> LF happen before counting
    h, out = send_body(b"..\r\n..\r\n..\r\n.\r\n", step, databytes=6)
    assert out.startswith(b"250 ok ")


@pytest.mark.parametrize("result, reply", [
    (b"Zqq write error or disk full (#4.3.0)", b"451 qq write error or disk full (#4.3.0)\r\n"),
    (b"Dmail server permanently rejected message (#5.3.0)",
     b"554 mail server permanently rejected message (#5.3.0)\r\n"),
    (b"Zconnection to mail server rejected (#4.4.1)",
     b"451 connection to mail server rejected (#4.4.1)\r\n"),
])
def test_queue_failures(result, reply):
    h, out = send_body(b"x\r\n.\r\n", result=result)
    assert out == reply


def test_queue_cannot_start():
    from pyqmail.errors import Temporary
    h, out = converse(b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nRCPT TO:<c@y>\r\n",
                      open_error=Temporary(b"unable to make pipes"))
    assert out == b"250 ok\r\n250 ok\r\n451 qqt failure (#4.3.0)\r\n503 MAIL first (#5.5.1)\r\n"


@pytest.mark.parametrize("step", STEPS)
def test_eof_or_timeout_mid_data_queues_nothing(step):
    h, out = send_body(b"Subject: x\r\n\r\nhalf", step)
    assert out == b""
    assert h.session.receive(b"") == b""
    assert h.session.exit_code == 1 and h.queued == [] and h.queues[0].closed
    h, out = send_body(b"Subject: x\r\n\r\nhalf", step)
    assert h.session.timeout() == b"451 timeout (#4.4.2)\r\n"
    assert h.queued == [] and h.queues[0].closed


# ---- limits and output buffering

@pytest.mark.parametrize("step", [1000, 4096])
def test_long_command_line(step):
    h, out = converse(b"NOOP " + b"x" * (smtp.COMMAND_MAX - 5) + b"\r\n", step)
    assert out == b"250 ok\r\n"
    h, out = converse(b"NOOP " + b"x" * (smtp.COMMAND_MAX - 4) + b"\r\nNOOP\r\n", step)
    assert out == b"421 out of memory (#4.3.0)\r\n"
    h, out = converse(b"NOOP " + b"x" * (smtp.COMMAND_MAX + 100), step)
    assert out == b"421 out of memory (#4.3.0)\r\n"
    assert h.session.exit_code == 1
    assert smtp.COMMAND_MAX >= 65536


def writes(h, data):
    return h.session.receive_writes(data)


def test_flush_rules():
    """spec/smtpd.md §4: MAIL, RCPT, RSET replies wait in the 512-byte buffer;
    the others flush; everything is flushed before the next read."""
    h = Harness()
    assert writes(h, b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRSET\r\n") == [
        b"250 ok\r\n250 ok\r\n250 flushed\r\n"]
    assert writes(h, b"NOOP\r\nNOOP\r\n") == [b"250 ok\r\n", b"250 ok\r\n"]
    assert writes(h, b"RSET\r\nNOOP\r\nRSET\r\n") == [b"250 flushed\r\n250 ok\r\n", b"250 flushed\r\n"]
    out = writes(h, b"MAIL FROM:<a@x>\r\n" + b"RCPT TO:<b@y>\r\n" * 100)
    assert [len(w) for w in out] == [512, 296]
    assert b"".join(out) == b"250 ok\r\n" * 101
    h = Harness(greeting=b"g" * 600)
    assert h.session.greet() == b"220 " + b"g" * 600 + b" ESMTP\r\n"
    assert writes(h, b"RSET\r\nHELO x\r\n") == [b"250 flushed\r\n250 ", b"g" * 600, b"\r\n"]
