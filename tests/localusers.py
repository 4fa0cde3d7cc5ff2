"""Real accounts for local-delivery tests: created with useradd (homes under a
public temporary directory), removed with userdel afterwards."""
import os
import pwd
import shutil
import subprocess
import time

from conftest import public_tmpdir


class User:
    def __init__(self, name: str, home: str):
        self.name = name
        self.home = home
        pw = pwd.getpwnam(name)
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid

    def write(self, relative: str, data: bytes, mode: int = 0o600) -> str:
        """A file in the home, owned by the user."""
        path = os.path.join(self.home, relative)
        with open(path, "wb") as f:
            f.write(data)
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)
        return path

    def mkdir(self, relative: str, mode: int = 0o700) -> str:
        path = os.path.join(self.home, relative)
        os.mkdir(path)
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)
        return path

    def maildir(self, relative: str = "Maildir") -> str:
        path = self.mkdir(relative)
        for sub in ("tmp", "new", "cur"):
            self.mkdir(os.path.join(relative, sub))
        return path


class Users:
    """A set of throw-away accounts; `make(tag)` adds one."""

    def __init__(self):
        self.base = public_tmpdir("pyqmail-users-")
        self.names = []

    def make(self, tag: str, home_owner_root: bool = False) -> User:
        name = "pq%s%d" % (tag, os.getpid() % 100000)
        home = os.path.join(self.base, name)
        os.mkdir(home)
        subprocess.run(["useradd", "--no-create-home", "--home-dir", home, "--user-group",
                        "--shell", "/bin/sh", name], check=True, capture_output=True)
        self.names.append(name)
        user = User(name, home)
        os.chmod(home, 0o755)
        if not home_owner_root:
            os.chown(home, user.uid, user.gid)
        return user

    def cleanup(self):
        """Remove the accounts: each once no process runs as it any more (an
        idle resident qmail-local ends when its qmail-lspawn does, a moment
        after); one still running after 10 s is a process the test left."""
        left = []
        for name in self.names:
            uid = pwd.getpwnam(name).pw_uid
            deadline = time.monotonic() + 10
            while processes_of(uid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if processes_of(uid):
                left.append(name)
            subprocess.run(["userdel", name], capture_output=True)
            subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
        assert not left, "processes still run as %s" % left


def processes_of(uid: int) -> list[int]:
    """The pids of the processes whose real uid is uid."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/status" % entry) as f:
                    status = f.read()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("Uid:") and int(line.split()[1]) == uid:
                    out.append(int(entry))
    return out
