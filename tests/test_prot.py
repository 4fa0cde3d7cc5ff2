"""prot.py: privilege dropping really changes uid, gid and groups, for good."""
import os

import pytest

from conftest import in_child, need_root, uid
from pyqmail import prot


def status_in_child(target_uid, target_gid, groups=None):
    """Drop in a forked child; return its /proc/self/status lines and whether
    setuid(0) worked afterwards."""
    def body():
        prot.drop(target_uid, target_gid, groups)
        with open("/proc/self/status", "rb") as f:
            lines = [ln for ln in f.read().split(b"\n")
                     if ln.split(b":")[0] in (b"Uid", b"Gid", b"Groups")]
        try:
            os.setuid(0)
            regained = b"regained"
        except PermissionError:
            regained = b"stuck"
        return b"\n".join(lines + [regained])
    return in_child(body).split(b"\n")


def test_drop_to_qmaild():
    need_root()
    import grp
    u, g = uid("qmaild"), grp.getgrnam("nofiles").gr_gid
    lines = status_in_child(u, g)
    assert lines[0].split() == [b"Uid:"] + [b"%d" % u] * 4
    assert lines[1].split() == [b"Gid:"] + [b"%d" % g] * 4
    assert lines[2].split() == [b"Groups:", b"%d" % g]
    assert lines[3] == b"stuck"


def test_drop_with_supplementary_groups():
    need_root()
    import grp
    u, g = uid("qmailr"), grp.getgrnam("qmail").gr_gid
    extra = grp.getgrnam("nofiles").gr_gid
    lines = status_in_child(u, g, [g, extra])
    assert sorted(lines[2].split()[1:]) == sorted([b"%d" % g, b"%d" % extra])
    assert lines[3] == b"stuck"


def test_drop_fails_without_privilege():
    if os.geteuid() == 0:
        lines = status_in_child(uid("qmaild"), 0)
        assert lines[3] == b"stuck"
        return
    with pytest.raises(PermissionError):
        prot.drop(0, 0)
