"""control.py: qmail's control-file reading rules (spec/control.md §1)."""
import os

import pytest

from pyqmail import control


@pytest.fixture
def ctl(tmp_path):
    (tmp_path / "control").mkdir()
    return control.Control(os.fsencode(tmp_path))


def put(c, name, data: bytes):
    with open(c.path(name), "wb") as f:
        f.write(data)


def test_line_takes_first_line_and_strips_trailing_space_tab_lf(ctl):
    put(ctl, b"me", b"mail.example.com \t \nsecond line\n")
    assert ctl.line(b"me") == b"mail.example.com"


def test_line_keeps_cr_and_leading_whitespace(ctl):
    put(ctl, b"smtpgreeting", b"  host.example\r\n")
    assert ctl.line(b"smtpgreeting") == b"  host.example\r"


def test_line_empty_file_is_empty_value_not_default(ctl):
    put(ctl, b"bouncefrom", b"")
    assert ctl.line(b"bouncefrom", b"MAILER-DAEMON") == b""


def test_line_without_final_newline(ctl):
    put(ctl, b"me", b"host.example")
    assert ctl.line(b"me") == b"host.example"


def test_missing_line_gives_me_then_default(ctl):
    assert ctl.line(b"bouncehost", b"bouncehost", use_me=True) == b"bouncehost"
    put(ctl, b"me", b"me.example\n")
    fresh = control.Control(os.path.dirname(ctl.dir))
    assert fresh.line(b"bouncehost", b"bouncehost", use_me=True) == b"me.example"
    assert fresh.line(b"bouncefrom", b"MAILER-DAEMON") == b"MAILER-DAEMON"


def test_missing_line_without_default_is_none(ctl):
    assert ctl.line(b"smtpgreeting") is None


@pytest.mark.parametrize("data,value", [
    (b"25\n", 25), (b"25abc\n", 25), (b"0\n", 0), (b"007", 7),
    (b"120 \t\n", 120), (b"99999999999\n", 99999999999),
])
def test_int_uses_leading_digits(ctl, data, value):
    put(ctl, b"concurrencylocal", data)
    assert ctl.int(b"concurrencylocal", 10) == value


@pytest.mark.parametrize("data", [b"ten\n", b" 5\n", b"-5\n", b"+5\n", b"\n", b"", b"_1\n"])
def test_int_without_leading_digit_keeps_default(ctl, data):
    put(ctl, b"concurrencylocal", data)
    assert ctl.int(b"concurrencylocal", 10) == 10


def test_int_missing_keeps_default(ctl):
    assert ctl.int(b"queuelifetime", 604800) == 604800


def test_int_reads_only_first_line(ctl):
    put(ctl, b"databytes", b"\n500\n")
    assert ctl.int(b"databytes", 0) == 0


def test_list_rules(ctl):
    put(ctl, b"rcpthosts", b"a.example\n# comment\n\n  indented \n.b.example\t\n   \nlast")
    assert ctl.list(b"rcpthosts") == [b"a.example", b"  indented", b".b.example", b"last"]


def test_list_hash_only_at_first_byte(ctl):
    put(ctl, b"locals", b" #not-a-comment\nx#y\n")
    assert ctl.list(b"locals") == [b" #not-a-comment", b"x#y"]


def test_list_missing_is_none_or_me(ctl):
    assert ctl.list(b"locals") is None
    assert ctl.list(b"locals", use_me=True) is None
    put(ctl, b"me", b"h.example\n")
    fresh = control.Control(os.path.dirname(ctl.dir))
    assert fresh.list(b"locals", use_me=True) == [b"h.example"]
    assert fresh.list(b"rcpthosts") is None


def test_list_empty_file_is_empty_list(ctl):
    put(ctl, b"rcpthosts", b"")
    assert ctl.list(b"rcpthosts") == []


def test_unreadable_file_is_an_error_not_the_default(ctl):
    os.mkdir(ctl.path(b"concurrencyremote"))  # read() fails with EISDIR
    with pytest.raises(control.ControlError) as e:
        ctl.int(b"concurrencyremote", 20)
    assert e.value.text == b"unable to read %s: is a directory" % ctl.path(b"concurrencyremote")


def test_unreadable_by_permissions(ctl):
    import pwd
    put(ctl, b"me", b"x\n")
    os.chmod(ctl.path(b"me"), 0o600)
    if os.geteuid() != 0:
        pytest.skip("needs root to change uid")
    nobody = pwd.getpwnam("nobody")
    os.chmod(ctl.dir, 0o755)
    os.chmod(os.path.dirname(ctl.dir), 0o755)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            try:
                control.Control(os.path.dirname(ctl.dir)).me
                os.write(w, b"read")
            except control.ControlError as e:
                os.write(w, e.reason)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    assert os.read(r, 100) == b"access denied"


def test_nul_byte_is_refused_with_a_clear_message(ctl):
    put(ctl, b"me", b"host\0.evil\n")
    with pytest.raises(control.ControlError) as e:
        ctl.line(b"me")
    assert e.value.reason == b"file contains a NUL byte"
    put(ctl, b"rcpthosts", b"a\n\0b\n")
    with pytest.raises(control.ControlError):
        ctl.list(b"rcpthosts")


def test_me_is_read_once(ctl):
    put(ctl, b"me", b"first\n")
    assert ctl.me == b"first"
    put(ctl, b"me", b"second\n")
    assert ctl.me == b"first"


def test_c_int():
    # control_readint(): the unsigned long kept in an int
    assert [control.c_int(v) for v in (1200, 4294967295, 2 ** 31, 2 ** 32 + 5)] == \
        [1200, -1, -2 ** 31, 5]


def test_scan_ulong():
    assert control.scan_ulong(b"123abc") == 123
    assert control.scan_ulong(b"abc") is None
    assert control.scan_ulong(b"\xd9\xa3") is None  # no Unicode digits
