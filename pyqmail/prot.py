"""Dropping privileges, as qmail's prot_gid()/prot_uid(): groups first, uid last,
then a check that none of it can be regained."""
import os


def drop(uid: int, gid: int, groups: list[int] | None = None) -> None:
    """Become uid:gid with exactly `groups` (default [gid]) as supplementary groups;
    raise PermissionError unless the change is complete and irreversible."""
    groups = [gid] if groups is None else groups
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if (os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid)
            or sorted(os.getgroups()) != sorted(set(groups))):
        raise PermissionError("privileges not dropped")
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise PermissionError("privileges could be regained")
