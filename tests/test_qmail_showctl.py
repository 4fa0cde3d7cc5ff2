"""qmail-showctl as installed: its whole report, byte for byte (spec/admin-tools.md §1)."""
import grp
import os
import pwd
import subprocess

from conftest import PYTHON, SRC

EXPECTED = """\
qmail home directory: {home}.
user-ext delimiter: -.
paternalism (in decimal): 2.
silent concurrency limit: 120.
subdirectory split: 23.
user ids: {alias}, {qmaild}, {qmaill}, 0, {qmailp}, {qmailq}, {qmailr}, {qmails}.
group ids: {nofiles}, {qmail}.

badmailfrom: 
spam@example.net not accepted in MAIL FROM.
x@a not accepted in MAIL FROM.
y@b not accepted in MAIL FROM.
@bad.example not accepted in MAIL FROM.

bouncefrom: Bounce user name is bou?nce.

bouncehost: (Default.) Bounce host name is mail.example.com.

concurrencylocal: (Default.) Local concurrency is 10.

concurrencyremote: (Default.) Remote concurrency is 20.

databytes: SMTP DATA limit is 1000000 bytes.

defaultdomain: Default domain name is example.com.

defaulthost: (Default.) Default host name is mail.example.com.

doublebouncehost: (Default.) 2B recipient host: mail.example.com.

doublebounceto: (Default.) 2B recipient user: postmaster.

envnoathost: (Default.) Presumed domain name is mail.example.com.

helohost: Oops! Trouble reading this file.

idhost: (Default.) Message-ID host name is mail.example.com.

localiphost: (Default.) Local IP address becomes mail.example.com.

locals: 
Messages for mail.example.com are delivered locally.
Messages for example.com are delivered locally.

me: My name is mail.example.com.

percenthack: (Default.) The percent hack is not allowed.

plusdomain: Plus domain name is example.com?.

qmqpservers: (Default.) No QMQP servers.

queuelifetime: Message lifetime in the queue is 0 seconds.

rcpthosts: 
SMTP clients may send messages to recipients at mail.example.com.
SMTP clients may send messages to recipients at .example.com.

morercpthosts: 
SMTP clients may send messages to recipients at other.example.

morercpthosts.cdb: Oops! morercpthosts exists but morercpthosts.cdb doesn't.

smtpgreeting: (Default.) SMTP greeting: 220 mail.example.com.

smtproutes: 
SMTP route: :relay.example.net:2525

timeoutconnect: SMTP client connection timeout is 1 seconds.

timeoutremote: (Default.) SMTP client data timeout is 1200 seconds.

timeoutsmtpd: (Default.) SMTP server data timeout is 1200 seconds.

virtualdomains: 

tcp.smtp: I have no idea what this file does.
"""

FILES = {
    # a NUL splits an entry, as qmail's NUL-separated list does
    "badmailfrom": b"# comment\n\n \nspam@example.net  \nx@a\0y@b\n@bad.example",
    "bouncefrom": b"bou\tnce  \t\nsecond line\n",
    "databytes": b"1000000 bytes\n",
    "defaultdomain": b"example.com\n",
    "locals": b"mail.example.com\nexample.com\n",
    "me": b"mail.example.com\n",
    "plusdomain": b"example.com\r\n",          # CR stays and shows as ?
    "queuelifetime": b"3000000000\n",         # negative as an int: shown as 0
    "rcpthosts": b"mail.example.com\n.example.com\n",
    "morercpthosts": b"other.example\n",
    "smtproutes": b":relay.example.net:2525\n",
    "timeoutconnect": b"4294967297\n",        # modulo 2^32
    "timeoutsmtpd": b" 5\n",                  # no leading digit: the default
    "concurrencyremote": b"-5\n",
    "virtualdomains": b"",
    "tcp.smtp": b"127.:allow\n",
}


def ids():
    u = {n: pwd.getpwnam(n).pw_uid for n in
         ("alias", "qmaild", "qmaill", "qmailp", "qmailq", "qmailr", "qmails")}
    u.update({n: grp.getgrnam(n).gr_gid for n in ("nofiles", "qmail")})
    return u


def showctl(home):
    return subprocess.run([os.path.join(home, "bin", "qmail-showctl")], capture_output=True)


def test_full_report(fresh_home):
    control = os.path.join(fresh_home, "control")
    for name, data in FILES.items():
        with open(os.path.join(control, name), "wb") as f:
            f.write(data)
    os.mkdir(os.path.join(control, "helohost"))   # exists, cannot be read
    done = showctl(fresh_home)
    assert (done.returncode, done.stderr) == (0, b"")
    assert done.stdout.decode() == EXPECTED.format(home=fresh_home, **ids())


def test_morercpthosts_cdb_and_no_rcpthosts(fresh_home):
    control = os.path.join(fresh_home, "control")

    def paragraphs():
        out = showctl(fresh_home).stdout.decode()
        start = out.index("\nmorercpthosts: ")
        return out[start:out.index("\nsmtpgreeting: ")]
    assert paragraphs() == ("\nmorercpthosts: (Default.) No rcpthosts; morercpthosts is irrelevant.\n"
                            "\nmorercpthosts.cdb: (Default.) No effect.\n")
    with open(os.path.join(control, "morercpthosts"), "wb") as f:
        f.write(b"a.example\n")
    os.utime(os.path.join(control, "morercpthosts"), (1000000000, 1000000000))
    done = subprocess.run([os.path.join(fresh_home, "bin", "qmail-newmrh")], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert paragraphs() == (
        "\nmorercpthosts: \nNo rcpthosts; doesn't matter that morercpthosts has a.example.\n"
        "\nmorercpthosts.cdb: Modified recently enough; hopefully up to date.\n")
    os.utime(os.path.join(control, "morercpthosts"))
    os.utime(os.path.join(control, "morercpthosts.cdb"), (1000000000, 1000000000))
    with open(os.path.join(control, "rcpthosts"), "wb") as f:
        f.write(b"")
    assert paragraphs() == (
        "\nmorercpthosts: \nSMTP clients may send messages to recipients at a.example.\n"
        "\nmorercpthosts.cdb: Oops! morercpthosts.cdb is older than morercpthosts.\n")
    os.unlink(os.path.join(control, "morercpthosts"))
    assert paragraphs() == (
        "\nmorercpthosts: (Default.) No effect.\n"
        "\nmorercpthosts.cdb: Oops! morercpthosts.cdb exists but morercpthosts doesn't.\n")


def test_fresh_install_without_me(fresh_home):
    out = showctl(fresh_home).stdout.decode()
    assert "\nme: (Default.) My name is undefined! Uh-oh.\n" in out
    assert "\nbouncehost: (Default.) Bounce host name is bouncehost.\n" in out
    assert "\nlocals: (Default.) Messages for me are delivered locally.\n" in out
    assert out.endswith("\nvirtualdomains: (Default.) No virtual domains.\n")


def test_fatal_cases(fresh_home):
    header = showctl(fresh_home).stdout.split(b"\n\n")[0] + b"\n"
    me = os.path.join(fresh_home, "control", "me")
    os.mkdir(me)
    done = showctl(fresh_home)
    assert (done.returncode, done.stdout) == (111, header + b"Oops! Trouble reading control/me.")
    os.rmdir(me)
    control = os.path.join(fresh_home, "control")
    os.rename(control, control + ".away")
    done = showctl(fresh_home)
    assert (done.returncode, done.stdout) == (111, header + b"Oops! Unable to chdir to control.\n")
    code = ("import sys; sys.path.insert(0, %r); from pyqmail import qmail_showctl; "
            "sys.exit(qmail_showctl.run(b'/nonexistent-qmail'))" % SRC)
    done = subprocess.run([PYTHON, "-I", "-c", code], capture_output=True)
    assert done.returncode == 111
    assert done.stdout.endswith(b".\nOops! Unable to chdir to /nonexistent-qmail.\n")
