"""A private Postfix instance for the benchmark: its own configuration, queue and
data directories, on a loopback port, never the system's instance."""
import os
import shutil
import subprocess
import time

POSTFIX = "/usr/sbin/postfix"
SENDMAIL = "/usr/sbin/sendmail"

# Debian's master.cf services, without chroot (the private queue has no chroot
# tree) and with smtpd on our loopback port only.
MASTER_CF = """\
%(port)d  inet  n       -       n       -       -       smtpd
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

MAIN_CF = """\
compatibility_level = 3.6
config_directory = %(conf)s
queue_directory = %(queue)s
data_directory = %(data)s
meta_directory = /etc/postfix
myhostname = %(domain)s
mydomain = %(domain)s
myorigin = $myhostname
mydestination = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
relay_domains =
alias_maps =
alias_database =
home_mailbox = Maildir/
mailbox_size_limit = 0
message_size_limit = 104857600
biff = no
append_dot_mydomain = no
smtputf8_enable = no
maillog_file = %(log)s
maillog_file_prefixes = %(base)s
transport_maps = inline:{ {%(relay_domain)s=smtp:[127.0.0.1]:%(relay_port)d}, {%(dead_domain)s=smtp:[127.0.0.1]:%(dead_port)d} }
smtp_tls_security_level = none
smtpd_tls_security_level = none
"""


class Postfix:
    """`postfix -c DIR start` with DIR, the queue and the data under base."""

    def __init__(self, base: str, domain: str, port: int, relay_domain: str, relay_port: int,
                 dead_domain: str, dead_port: int):
        self.base = base
        self.conf = os.path.join(base, "conf")
        self.queue = os.path.join(base, "queue")
        self.data = os.path.join(base, "data")
        self.log = os.path.join(base, "maillog")
        self.domain = domain
        self.port = port
        for d in (self.conf, self.queue, self.data):
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o755)
        shutil.chown(self.data, "postfix", "postfix")
        values = {"base": base, "conf": self.conf, "queue": self.queue, "data": self.data, "log": self.log,
                  "domain": domain, "port": port, "relay_domain": relay_domain,
                  "relay_port": relay_port, "dead_domain": dead_domain, "dead_port": dead_port}
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(MAIN_CF % values)
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF % values)
        self.running = False

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([POSTFIX, "-c", self.conf, *args], capture_output=True,
                              stdin=subprocess.DEVNULL)

    def start(self) -> None:
        done = self.postfix("start")
        if done.returncode != 0:
            raise RuntimeError("postfix start failed: %s" % (done.stdout + done.stderr).decode(errors="replace"))
        self.running = True

    def master_pid(self) -> int | None:
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if not self.running:
            return
        pid = self.master_pid()
        self.postfix("stop")
        deadline = time.monotonic() + 20
        while pid and os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid and os.path.exists("/proc/%d" % pid):
            self.postfix("abort")
        self.running = False

    def queue_empty(self) -> bool:
        for sub in ("incoming", "active", "deferred", "maildrop", "hold"):
            for _, _, files in os.walk(os.path.join(self.queue, sub)):
                if files:
                    return False
        return True

    def sendmail_argv(self) -> list[str]:
        return [SENDMAIL, "-C", self.conf, "-i"]
