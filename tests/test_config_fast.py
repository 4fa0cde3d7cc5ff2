"""config-fast: the control files and the exact words of qmail's config-fast."""
import os
import subprocess

import pytest

from pyqmail import config_fast


@pytest.mark.parametrize("fqdn,ddom,pdom", [
    (b"host.example.com", b"example.com", b"example.com"),
    (b"a.b.example.com", b"b.example.com", b"example.com"),
    (b"example.com", b"example.com", b"example.com"),
    (b"localhost", b"localhost", b"localhost"),
])
def test_derived_domains(fqdn, ddom, pdom):
    assert config_fast.default_domain(fqdn) == ddom
    assert config_fast.plus_domain(fqdn) == pdom


def test_installed_config_fast_writes_files_and_says_so(fresh_home):
    control = os.path.join(fresh_home, "control")
    with open(os.path.join(control, "locals"), "wb") as f:
        f.write(b"old.example\n")
    out = subprocess.run([os.path.join(fresh_home, "bin", "config-fast"), "a.b.example.com"],
                         capture_output=True)
    assert out.returncode == 0
    assert out.stdout == (
        b"Your fully qualified host name is a.b.example.com.\n"
        b"Putting a.b.example.com into control/me...\n"
        b"Putting b.example.com into control/defaultdomain...\n"
        b"Putting example.com into control/plusdomain...\n"
        b"Putting a.b.example.com into control/locals...\n"
        b"Putting a.b.example.com into control/rcpthosts...\n"
        b"Now qmail will refuse to accept SMTP messages except to a.b.example.com.\n"
        b"Make sure to change rcpthosts if you add hosts to locals or virtualdomains!\n")
    expect = {"me": b"a.b.example.com\n", "defaultdomain": b"b.example.com\n",
              "plusdomain": b"example.com\n", "locals": b"old.example\na.b.example.com\n",
              "rcpthosts": b"a.b.example.com\n"}
    for name, data in expect.items():
        path = os.path.join(control, name)
        with open(path, "rb") as f:
            assert f.read() == data
        assert os.stat(path).st_mode & 0o777 == 0o644


def test_config_fast_without_argument(fresh_home):
    out = subprocess.run([os.path.join(fresh_home, "bin", "config-fast")], capture_output=True)
    assert out.returncode == 100
    assert out.stderr == b"config-fast: usage: config-fast full.host.name\n"
    assert os.listdir(os.path.join(fresh_home, "control")) == []


def test_config_asks_dns(fresh_home):
    """bin/config in a UTS namespace whose hostname is `mail`, against a real
    dnsmasq: the canonical name goes to me, PTR names of local IPs to locals."""
    from remote_peers import Dnsmasq
    dns = Dnsmasq(["--host-record=mail.example.net,127.0.0.1",
                   "--ptr-record=1.0.0.127.in-addr.arpa,mail.example.net"])
    try:
        env = dict(dns.env(), PATH="/usr/bin:/bin")
        out = subprocess.run(["unshare", "-u", "sh", "-c", 'hostname MAIL.Example.NET && exec "$0"',
                              os.path.join(fresh_home, "bin", "config")], env=env, capture_output=True)
    finally:
        dns.stop()
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert text.startswith("Your hostname is mail.example.net.\n"
                           "Your host's fully qualified name in DNS is mail.example.net.\n"
                           "Putting mail.example.net into control/me...\n"
                           "Putting example.net into control/defaultdomain...\n"
                           "Putting example.net into control/plusdomain...\n \n"
                           "Checking local IP addresses:\n"
                           "127.0.0.1: Adding mail.example.net to control/locals...\n")
    assert "PTR lookup failed. I assume this address has no DNS name." in text  # the other IPs
    assert text.endswith("Now qmail will refuse to accept SMTP messages except to those hosts.\n"
                         "Make sure to change rcpthosts if you add hosts to locals or virtualdomains!\n")
    control = os.path.join(fresh_home, "control")
    for name, data in (("me", b"mail.example.net\n"), ("locals", b"mail.example.net\n"),
                       ("rcpthosts", b"mail.example.net\n"), ("defaultdomain", b"example.net\n")):
        with open(os.path.join(control, name), "rb") as f:
            assert f.read() == data


def test_config_without_dns_name(fresh_home):
    from remote_peers import Dnsmasq
    dns = Dnsmasq([])
    try:
        out = subprocess.run(["unshare", "-u", "sh", "-c", 'hostname nowhere && exec "$0"',
                              os.path.join(fresh_home, "bin", "config")],
                             env=dict(dns.env(), PATH="/usr/bin:/bin"), capture_output=True)
    finally:
        dns.stop()
    assert (out.returncode, out.stdout) == (0, b"Your hostname is nowhere.\n"
                                            b"Sorry, I couldn't find your host's canonical name in DNS.\n"
                                            b"You will have to set up control/me yourself.\n")
    assert os.listdir(os.path.join(fresh_home, "control")) == []
