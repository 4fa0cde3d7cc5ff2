"""`make users`: create qmail's users and groups when missing (spec/install.md §2).

    python3 -m pyqmail.users QMAIL_HOME SOURCE_DIR

Names come from conf-users and conf-groups.  Existing users and groups are left
exactly as they are, so running it twice changes nothing.
"""
import grp
import os
import pwd
import subprocess
import sys

# conf-users order -> the group each user belongs to and its home below QMAIL_HOME
ROLES = ((b"alias", b"nofiles", b"alias"), (b"qmaild", b"nofiles", b""),
         (b"qmaill", b"nofiles", b""), (b"owner", None, None),
         (b"qmailp", b"nofiles", b""), (b"qmailq", b"qmail", b""),
         (b"qmailr", b"qmail", b""), (b"qmails", b"qmail", b""))


def nologin() -> str:
    for shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false"):
        if os.path.exists(shell):
            return shell
    return "/bin/false"


def make_users(home: bytes, source: bytes) -> int:
    with open(os.path.join(source, b"conf-users"), "rb") as f:
        users = [line.strip().decode() for line in f.read().split(b"\n\n")[0].split(b"\n")][:8]
    with open(os.path.join(source, b"conf-groups"), "rb") as f:
        groups = [line.strip().decode() for line in f.read().split(b"\n\n")[0].split(b"\n")][:2]
    group_of = {b"qmail": groups[0], b"nofiles": groups[1]}
    for name in groups:
        try:
            grp.getgrnam(name)
        except KeyError:
            subprocess.run(["groupadd", "--system", name], check=True)
            print(f"created group {name}")
    for (role, group, subdir), name in zip(ROLES, users):
        if group is None:
            continue
        try:
            pwd.getpwnam(name)
            continue
        except KeyError:
            pass
        user_home = os.fsdecode(os.path.join(home, subdir) if subdir else home)
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", user_home,
                        "--gid", group_of[group], "--shell", nologin(), name], check=True)
        print(f"created user {name}")
    return 0


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python3 -m pyqmail.users QMAIL_HOME SOURCE_DIR")
    sys.exit(make_users(os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])))


if __name__ == "__main__":
    main()
