"""A private Postfix instance for the interoperability tests: its own main.cf and
master.cf, queue and data directories under a temporary directory, smtpd on a
loopback port, its log in a file.  `postfix -c CONF start` and `postfix -c CONF
stop`; the system's Postfix is never touched."""
import os
import shutil
import socket
import subprocess
import time

import pytest

from conftest import public_tmpdir

POSTFIX = "/usr/sbin/postfix"
PORTS = range(29000, 30000)

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydomain = {hostname}
myorigin = $myhostname
mydestination = {hostname}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
home_mailbox = Maildir/
mailbox_command =
biff = no
append_dot_mydomain = no
smtputf8_enable = no
local_header_rewrite_clients =
smtpd_peername_lookup = no
smtp_host_lookup = native
smtp_dns_support_level = disabled
smtp_tls_security_level = none
smtpd_tls_security_level = none
transport_maps = {transport_maps}
maillog_file = {base}/maillog
maillog_file_prefixes = {base}
delay_warning_time = 0
"""

# chroot "n" everywhere: the queue directory is not prepared as a chroot jail
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def free_port(host: str = "127.0.0.1") -> int:
    """A free TCP port in 29000-29999 (this suite's share), starting at a
    place that depends on the pid so parallel runs rarely collide."""
    start = os.getpid() % len(PORTS)
    for i in range(len(PORTS)):
        port = PORTS[(start + i * 37) % len(PORTS)]
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    pytest.fail("no free port in 29000-29999")


def wait_until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true after {timeout}s")
        time.sleep(0.02)


class Postfix:
    """A private Postfix; `transports` maps a domain to a nexthop such as
    `smtp:[127.0.0.1]:29001`."""

    def __init__(self, hostname: str = "postfix.test", transports: dict | None = None):
        if not os.path.exists(POSTFIX):
            pytest.skip("postfix not installed (Debian postfix)")
        self.base = public_tmpdir("pyqmail-postfix-")
        self.conf = os.path.join(self.base, "conf")
        self.queue = os.path.join(self.base, "queue")
        self.data = os.path.join(self.base, "data")
        self.maillog = os.path.join(self.base, "maillog")
        self.hostname = hostname
        os.mkdir(self.conf, 0o755)
        os.mkdir(self.queue, 0o755)
        self.port = free_port()
        pairs = " ".join("{%s=%s}" % item for item in (transports or {}).items())
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(MAIN_CF.format(queue=self.queue, data=self.data, hostname=hostname, base=self.base,
                                   transport_maps="inline:{ %s }" % pairs if pairs else ""))
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=self.port))
        self.started = False
        # `postfix check` creates the missing queue subdirectories and the data
        # directory with the owners and modes Postfix insists on (post-install
        # create-missing); it chdirs to the queue directory, which must exist
        done = self.postfix("check")
        if done.returncode != 0:
            self.cleanup()
            pytest.fail("postfix check: %r %r" % (done.stderr, self.log()))
        self.check_output = done.stderr
        done = self.postfix("start")
        if done.returncode != 0:
            self.cleanup()
            pytest.fail("postfix start: %r %r" % (done.stderr, self.log()))
        self.started = True

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        try:
            wait_until(up, 20, "postfix smtpd listening")
        except BaseException:
            self.stop()
            raise

    def env(self) -> dict:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MAIL_CONFIG": self.conf}

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", self.conf, *args], capture_output=True,
                              env=self.env(), timeout=60)

    def sendmail(self, sender: str, recipients: list[str], message: bytes) -> subprocess.CompletedProcess:
        """Postfix's own sendmail(1) with this instance's configuration."""
        return subprocess.run(["/usr/sbin/sendmail", "-C", self.conf, "-f", sender, "-i", "--",
                               *recipients], input=message, capture_output=True,
                              env=self.env(), timeout=60)

    def mailq(self) -> bytes:
        done = subprocess.run(["/usr/sbin/postqueue", "-c", self.conf, "-p"], capture_output=True,
                              env=self.env(), timeout=60)
        return done.stdout + done.stderr

    def log(self) -> bytes:
        try:
            with open(self.maillog, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def master_pid(self) -> int | None:
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def processes(self) -> list[int]:
        """Every live process of this instance: they all work in its queue
        directory (the master and its daemons chdir there)."""
        out = []
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink(f"/proc/{p}/cwd").startswith(self.queue):
                    with open(f"/proc/{p}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                            out.append(int(p))
            except OSError:
                continue
        return out

    def stop(self):
        """postfix stop, then wait until no process of the instance is left."""
        if self.started:
            self.started = False
            self.postfix("stop")
            deadline = time.monotonic() + 30
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.05)
            left = self.processes()
            for pid in left:   # the instance's own processes, by pid
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            if left:
                self.cleanup()
                pytest.fail("postfix processes left after stop: %r" % left)
        self.cleanup()

    def cleanup(self):
        shutil.rmtree(self.base, ignore_errors=True)
