"""pyqmail.pop3, the sans-IO cores of qmail-popup and qmail-pop3d, fed whole,
one byte at a time and pipelined (spec/pop3.md)."""
import io

import pytest

from pyqmail import pop3

STEPS = [1, 3, 4096]


def feed(session, data, step):
    return b"".join(session.receive(data[i:i + step]) for i in range(0, len(data), step))


# ---- qmail-popup

def popup():
    return pop3.Popup(b"pop.example.com", 4242, 1709629621)


def test_popup_greeting_is_the_apop_timestamp():
    p = popup()
    assert p.greet() == b"+OK <4242.1709629621@pop.example.com>\r\n"
    assert p.timestamp() == b"<4242.1709629621@pop.example.com>"


@pytest.mark.parametrize("step", STEPS)
def test_popup_replies(step):
    p = popup()
    data = (b"PASS x\r\nUSER\r\nUSER \r\nSTAT\r\nnoop\r\nNoOp extra\r\nAPOP joe\r\n"
            b"USER joe\r\nuser  jim\r\n")
    assert feed(p, data, step) == (
        b"-ERR USER first\r\n-ERR syntax error\r\n-ERR syntax error\r\n"
        b"-ERR authorization first\r\n+OK \r\n+OK \r\n-ERR syntax error\r\n"
        b"+OK \r\n+OK \r\n")
    assert p.login is None and p.exit_code is None
    # the later USER replaced the first; PASS without a password is a syntax error
    assert feed(p, b"PASS\r\nPASS  s3cret pw\r\nSTAT\r\n", step) == b"-ERR syntax error\r\n"
    assert p.login == (b"jim", b"s3cret pw")
    assert p.pipe_data() == b"jim\0s3cret pw\0<4242.1709629621@pop.example.com>\0"
    # what follows the PASS line is not popup's to read
    assert p.receive(b"STAT\r\n") == b""


@pytest.mark.parametrize("step", STEPS)
def test_popup_apop_splits_at_the_first_space(step):
    p = popup()
    assert feed(p, b"APOP joe  c4c9334bac560ecc979e58001b3e22fb\r\n", step) == b""
    assert p.login == (b"joe", b" c4c9334bac560ecc979e58001b3e22fb")


def test_popup_bare_lf_nul_and_case():
    p = popup()
    assert p.receive(b"uSeR jo\0e\nPaSs pw\r\r\n") == b"+OK \r\n"
    # one CR is removed; a NUL ends the line as it ends qmail's C string
    assert p.login == (b"jo", b"pw\r")


@pytest.mark.parametrize("step", STEPS)
def test_popup_quit(step):
    p = popup()
    assert feed(p, b"NOOP\r\nQUIT\r\nNOOP\r\n", step) == b"+OK \r\n+OK \r\n"
    assert p.exit_code == 1


def test_popup_eof_and_overlong_line_end_silently():
    p = popup()
    assert p.receive(b"NOOP") == b""
    assert p.receive(b"") == b"" and p.exit_code == 1
    p = popup()
    assert p.receive(b"x" * (pop3.COMMAND_MAX + 10)) == b"" and p.exit_code == 1


def test_popup_child_results():
    for crashed, code, reply in ((True, 0, b"-ERR aack, child crashed\r\n"),
                                 (False, 1, b"-ERR authorization failed\r\n"),
                                 (False, 0, b"")):
        p = popup()
        p.receive(b"USER a\r\nPASS b\r\n")
        data = p.pipe_data()
        assert p.child_done(crashed, code) == reply and p.exit_code == 1
        p.forget(data)
        assert data == bytes(len(data)) and p.login[1] == b"\0"


# ---- qmail-pop3d

class Mailbox:
    def __init__(self, files, unlinkable=True):
        self.files = dict(files)
        self.unlinkable = unlinkable
        self.renamed = []

    def open(self, path):
        if path not in self.files:
            raise FileNotFoundError(path)
        return io.BytesIO(self.files[path])

    def unlink(self, path):
        if not self.unlinkable:
            raise PermissionError(path)
        del self.files[path]

    def rename(self, path, new):
        self.renamed.append((path, new))
        self.files[new] = self.files.pop(path)


M1 = b"Return-Path: <a@example.org>\nSubject: one\n\n.line with a dot\nbody 2\n..two dots\nbody 4\n"
M2 = b"Subject: two\r\n\r\nCRs stay as they are\r\nno final LF"
M3 = b"Subject: three\n\n"


def session(unlinkable=True):
    files = {b"cur/1000.1.host:2,S": M1, b"new/1001.2.host": M2, b"new/1002.3.host": M3}
    messages = [pop3.Message(p, len(files[p])) for p in
                (b"cur/1000.1.host:2,S", b"new/1001.2.host", b"new/1002.3.host")]
    box = Mailbox(files, unlinkable)
    return pop3.Pop3d(messages, box), box


@pytest.mark.parametrize("step", STEPS)
def test_pop3d_listing(step):
    s, _ = session()
    total = len(M1) + len(M2) + len(M3)
    assert s.greet() == b"+OK \r\n"
    out = feed(s, b"STAT\r\nLIST\r\nUIDL\r\nLIST 2\r\nuidl 1 junk\r\nLAST\r\n", step)
    assert out == (b"+OK 3 %d\r\n" % total
                   + b"+OK \r\n1 %d\r\n2 %d\r\n3 %d\r\n.\r\n" % (len(M1), len(M2), len(M3))
                   + b"+OK \r\n1 1000.1.host\r\n2 1001.2.host\r\n3 1002.3.host\r\n.\r\n"
                   + b"+OK 2 %d\r\n" % len(M2)
                   + b"+OK 1 1000.1.host\r\n"
                   + b"+OK 0\r\n")


@pytest.mark.parametrize("step", STEPS)
def test_pop3d_message_numbers(step):
    s, _ = session()
    out = feed(s, b"LIST x\r\nLIST 0\r\nLIST 4\r\nDELE 2\r\nLIST 2\r\nRETR 2\r\nDELE 2\r\n"
                  b"LIST 18446744073709551617\r\n", step)
    assert out == (b"-ERR syntax error\r\n-ERR messages are counted from 1\r\n"
                   b"-ERR not that many messages\r\n+OK \r\n-ERR already deleted\r\n"
                   b"-ERR already deleted\r\n-ERR already deleted\r\n"
                   # scan_ulong wraps as an unsigned long: 2^64 + 1 is 1
                   b"+OK 1 %d\r\n" % len(M1))


@pytest.mark.parametrize("step", STEPS)
def test_pop3d_dele_last_rset_stat(step):
    s, _ = session()
    out = feed(s, b"DELE 3\r\nDELE 1\r\nLAST\r\nSTAT\r\nLIST\r\nRSET\r\nLAST\r\nSTAT\r\n", step)
    total = len(M1) + len(M2) + len(M3)
    assert out == (b"+OK \r\n+OK \r\n+OK 3\r\n"
                   # STAT counts deleted messages, but not their sizes
                   + b"+OK 3 %d\r\n" % len(M2)
                   + b"+OK \r\n2 %d\r\n.\r\n" % len(M2)
                   + b"+OK \r\n+OK 0\r\n+OK 3 %d\r\n" % total)


@pytest.mark.parametrize("step", STEPS)
def test_pop3d_retr_stuffs_dots_and_adds_crlf(step):
    s, _ = session()
    out = feed(s, b"RETR 1\r\nRETR 2\r\nRETR 3\r\n", step)
    assert out == (
        b"+OK \r\nReturn-Path: <a@example.org>\r\nSubject: one\r\n\r\n..line with a dot\r\n"
        b"body 2\r\n...two dots\r\nbody 4\r\n\r\n.\r\n"
        # CRs in the file are sent as they are; a last line without LF is a line
        b"+OK \r\nSubject: two\r\r\n\r\r\nCRs stay as they are\r\r\nno final LF\r\n\r\n.\r\n"
        b"+OK \r\nSubject: three\r\n\r\n\r\n.\r\n")


@pytest.mark.parametrize("step", STEPS)
def test_pop3d_top(step):
    s, _ = session()
    out = feed(s, b"TOP 1 0\r\nTOP 1 2\r\nTOP 1\r\nRETR 1 1\r\nTOP 1  x\r\n", step)
    header = b"+OK \r\nReturn-Path: <a@example.org>\r\nSubject: one\r\n\r\n"
    whole = header + b"..line with a dot\r\nbody 2\r\n...two dots\r\nbody 4\r\n\r\n.\r\n"
    assert out == (header + b"\r\n.\r\n"
                   + header + b"..line with a dot\r\nbody 2\r\n\r\n.\r\n"
                   + whole
                   + header + b"..line with a dot\r\n\r\n.\r\n"
                   + whole)


def test_pop3d_top_of_header_only_and_empty_message():
    files = {b"new/a": b"Subject: x\nTo: y", b"new/b": b""}
    s = pop3.Pop3d([pop3.Message(b"new/a", 16), pop3.Message(b"new/b", 0)], Mailbox(files))
    assert s.receive(b"TOP 1 0\r\nRETR 2\r\n") == (
        b"+OK \r\nSubject: x\r\nTo: y\r\n\r\n.\r\n+OK \r\n\r\n.\r\n")


def test_pop3d_big_message_and_long_line():
    body = b"".join(b".line %d\n" % i for i in range(30000))
    long_line = b"." + b"x" * (3 * pop3.CHUNK) + b"\n.after\n"
    files = {b"new/a": b"S: 1\n\n" + body, b"new/b": long_line}
    s = pop3.Pop3d([pop3.Message(b"new/a", 0), pop3.Message(b"new/b", 0)], Mailbox(files))
    writes = list(s.receive_writes(b"RETR 1\r\n"))
    assert max(len(w) for w in writes) < 3 * pop3.CHUNK
    assert b"".join(writes) == (b"+OK \r\nS: 1\r\n\r\n" + body.replace(b"\n", b"\r\n")
                                .replace(b".line", b"..line") + b"\r\n.\r\n")
    assert s.receive(b"RETR 2\r\n") == (b"+OK \r\n." + long_line.replace(b"\n", b"\r\n")
                                        .replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
    assert s.receive(b"TOP 2 0\r\n") == (b"+OK \r\n." + long_line[:-8] + b"\r\n"
                                         + b"..after\r\n\r\n.\r\n")


def test_pop3d_unopenable_message():
    s, box = session()
    del box.files[b"new/1001.2.host"]
    assert s.receive(b"RETR 2\r\nTOP 2 1\r\n") == b"-ERR unable to open that message\r\n" * 2


@pytest.mark.parametrize("step", STEPS)
def test_pop3d_quit_deletes_and_moves_new_to_cur(step):
    s, box = session()
    out = feed(s, b"DELE 3\r\nNOOP\r\nQUIT\r\nSTAT\r\n", step)
    assert out == b"+OK \r\n+OK \r\n+OK \r\n"
    assert s.exit_code == 0
    assert sorted(box.files) == [b"cur/1000.1.host:2,S", b"cur/1001.2.host:2,"]
    assert box.renamed == [(b"new/1001.2.host", b"cur/1001.2.host:2,")]


def test_pop3d_quit_reports_each_failed_unlink():
    s, box = session(unlinkable=False)
    assert s.receive(b"DELE 1\r\nDELE 2\r\nQUIT\r\n") == (
        b"+OK \r\n+OK \r\n" + b"-ERR unable to unlink all deleted messages\r\n" * 2 + b"+OK \r\n")
    assert box.renamed == [(b"new/1002.3.host", b"cur/1002.3.host:2,")]


@pytest.mark.parametrize("step", STEPS)
def test_pop3d_eof_changes_nothing(step):
    s, box = session()
    feed(s, b"DELE 1\r\nDELE 2\r\n", step)
    assert s.receive(b"") == b"" and s.exit_code == 0
    assert len(box.files) == 3 and box.renamed == []


@pytest.mark.parametrize("verb", [b"USER x", b"PASS y", b"APOP a b", b"CAPA", b"AUTH", b"STLS", b"XYZ"])
def test_pop3d_unimplemented(verb):
    s, _ = session()
    assert s.receive(verb + b"\r\n") == b"-ERR unimplemented\r\n"


def test_pop3d_empty_maildir():
    s = pop3.Pop3d([], Mailbox({}))
    assert s.receive(b"STAT\r\nLIST\r\nUIDL\r\nQUIT\r\n") == (
        b"+OK 0 0\r\n+OK \r\n.\r\n+OK \r\n.\r\n+OK \r\n")
