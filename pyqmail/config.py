"""config: like config-fast, but asks DNS for this host's names (qmail's config.sh):
the canonical name of `hostname` goes into me, the PTR name of every local IP
address into locals, and locals is copied to rcpthosts.

DNS servers come from /etc/resolv.conf, or from DNSCACHEIP (and pyqmail's
DNSCACHEPORT), as for qmail-remote (pyqmail/qdns.py)."""
import os
import socket
import sys

from pyqmail import auto, config_fast, errors, ipme


def reverse_name(ip: str) -> bytes:
    return (".".join(reversed(ip.split("."))) + ".in-addr.arpa").encode()


def first_ptr(res, ip: str) -> str | None:
    import dns.rdatatype
    from pyqmail import qdns
    try:
        answer = res.query(reverse_name(ip), dns.rdatatype.PTR)
    except (qdns.Soft, qdns.Hard):
        return None
    return answer[0].to_text().rstrip(".").lower() if answer else None


def host_addresses(res, host: str) -> list[str]:
    import dns.rdatatype
    from pyqmail import qdns
    try:
        return [r.to_text() for r in res.query(host.encode(), dns.rdatatype.A)]
    except (qdns.Soft, qdns.Hard):
        return []


def run(qmail_home: bytes, out, env: dict[bytes, bytes], hostname: str | None = None) -> int:
    from pyqmail import qdns

    def say(text: str) -> None:
        config_fast.say(out, text.encode())

    host = (hostname if hostname is not None else socket.gethostname()).lower()
    if not host:
        say("Sorry, I couldn't find your hostname.")
        say("You will have to set up control/me yourself.")
        return 0
    say(f"Your hostname is {host}.")
    res = qdns.Resolver(env)
    ips = host_addresses(res, host)
    fqdn = first_ptr(res, ips[0]) if ips else None     # qmail's dnsfq
    if not fqdn:
        say("Sorry, I couldn't find your host's canonical name in DNS.")
        say("You will have to set up control/me yourself.")
        return 0
    control = os.path.join(qmail_home, b"control")
    shown = os.fsdecode(control)
    fq = fqdn.encode()
    try:
        say(f"Your host's fully qualified name in DNS is {fqdn}.")
        say(f"Putting {fqdn} into control/me...")
        config_fast.put(control, b"me", fq)
        ddom, pdom = config_fast.default_domain(fq), config_fast.plus_domain(fq)
        say(f"Putting {ddom.decode()} into control/defaultdomain...")
        config_fast.put(control, b"defaultdomain", ddom)
        say(f"Putting {pdom.decode()} into control/plusdomain...")
        config_fast.put(control, b"plusdomain", pdom)
        say(" ")
        say("Checking local IP addresses:")
        locals_path = os.path.join(control, b"locals")
        os.close(os.open(locals_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        os.chmod(locals_path, 0o644)
        for ip in sorted(set(host_addresses(res, fqdn)) | set(ipme.ipv4())):
            name = first_ptr(res, ip)
            if name is None:
                say(f"{ip}: PTR lookup failed. I assume this address has no DNS name.")
            else:
                say(f"{ip}: Adding {name} to control/locals...")
                config_fast.put(control, b"locals", name.encode(), append=True)
        say(" ")
        say("If there are any other domain names that point to you,")
        say(f"you will have to add them to {shown}/locals.")
        say("You don't have to worry about aliases, i.e., domains with CNAME records.")
        say(" ")
        say(f"Copying {shown}/locals to {shown}/rcpthosts...")
        with open(locals_path, "rb") as f:
            data = f.read()
        rcpthosts = os.path.join(control, b"rcpthosts")
        fd = os.open(rcpthosts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(rcpthosts, 0o644)
    except OSError as e:
        errors.write_line(2, b"config: fatal: unable to write to %s: %s" % (control, errors.error_str(e)))
        return 111
    say("Now qmail will refuse to accept SMTP messages except to those hosts.")
    say("Make sure to change rcpthosts if you add hosts to locals or virtualdomains!")
    return 0


def main() -> None:
    env = {k: v for k, v in os.environb.items() if k in (b"DNSCACHEIP", b"DNSCACHEPORT")}
    sys.exit(run(auto.QMAIL_HOME, sys.stdout.buffer, env))
