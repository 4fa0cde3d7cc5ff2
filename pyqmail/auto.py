"""What `make setup` fixes into the installed programs (qmail's auto_* files).

This is the checkout's copy, used only when the code runs from the source tree
(tests of single modules).  `make setup` writes a copy of this module with the
installation's literal values into QMAIL_HOME/lib/python/pyqmail/auto.py, as
qmail compiles auto_qmail.c, auto_uids.c and auto_split.c in.
"""
import pwd
import grp


def _uid(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return -1


def _gid(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return -1


QMAIL_HOME = b"/var/qmail"
SPLIT = 23          # conf-split
SPAWN = 120         # conf-spawn
PATRN = 0o002       # conf-patrn
BREAK = b"-"        # conf-break
PYTHON = b"/usr/bin/python3"

USER_ALIAS = b"alias"
USER_QMAILD = b"qmaild"
USER_QMAILL = b"qmaill"
USER_OWNER = b"root"
USER_QMAILP = b"qmailp"
USER_QMAILQ = b"qmailq"
USER_QMAILR = b"qmailr"
USER_QMAILS = b"qmails"
GROUP_QMAIL = b"qmail"
GROUP_NOFILES = b"nofiles"

UID_ALIAS = _uid("alias")
UID_QMAILD = _uid("qmaild")
UID_QMAILL = _uid("qmaill")
UID_OWNER = _uid("root")
UID_QMAILP = _uid("qmailp")
UID_QMAILQ = _uid("qmailq")
UID_QMAILR = _uid("qmailr")
UID_QMAILS = _uid("qmails")
GID_QMAIL = _gid("qmail")
GID_NOFILES = _gid("nofiles")
