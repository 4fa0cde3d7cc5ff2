"""config: like config-fast, but asks DNS for this host's names (qmail's config.sh):
the canonical name of `hostname` goes into me, the PTR name of every local IP
address into locals, and locals is copied to rcpthosts."""
import os
import socket
import sys

from pyqmail import auto, config_fast, errors, ipme


def resolver():
    import dns.resolver
    return dns.resolver.Resolver()


def fully_qualified(res, host: str) -> str | None:
    """qmail's dnsfq: the PTR name of the host's first address, else None."""
    import dns.exception
    import dns.reversename
    try:
        answer = res.resolve(host, "A")
        ip = answer[0].to_text()
        ptr = res.resolve(dns.reversename.from_address(ip), "PTR")
        return ptr[0].to_text().rstrip(".")
    except dns.exception.DNSException:
        return None


def addresses(res, host: str) -> list[str]:
    """qmail's `dnsip FQDN; ipmeprint | sort -u`."""
    import dns.exception
    found = set(ipme.ipv4())
    try:
        found.update(r.to_text() for r in res.resolve(host, "A"))
    except dns.exception.DNSException:
        pass
    return sorted(found)


def ptr_name(res, ip: str) -> str | None:
    import dns.exception
    import dns.reversename
    try:
        return res.resolve(dns.reversename.from_address(ip), "PTR")[0].to_text().rstrip(".")
    except dns.exception.DNSException:
        return None


def run(qmail_home: bytes, out, hostname: str | None = None, res=None) -> int:
    say = lambda text: config_fast.say(out, text.encode())  # noqa: E731
    host = (hostname or socket.gethostname()).lower()
    if not host:
        say("Sorry, I couldn't find your hostname.")
        say("You will have to set up control/me yourself.")
        return 0
    res = res or resolver()
    say(f'Your hostname is {host}.')
    fqdn = fully_qualified(res, host)
    if fqdn is None:
        say("Sorry, I couldn't find your host's canonical name in DNS.")
        say("You will have to set up control/me yourself.")
        return 0
    fqdn = fqdn.lower()
    control = os.path.join(qmail_home, b"control")
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
        for ip in addresses(res, fqdn):
            name = ptr_name(res, ip)
            if name is None:
                out.write(f"{ip}: PTR lookup failed. I assume this address has no DNS name.\n".encode())
            else:
                out.write(f"{ip}: Adding {name.lower()} to control/locals...\n".encode())
                config_fast.put(control, b"locals", name.lower().encode(), append=True)
        say(" ")
        say("If there are any other domain names that point to you,")
        say(f"you will have to add them to {os.fsdecode(control)}/locals.")
        say("You don't have to worry about aliases, i.e., domains with CNAME records.")
        say(" ")
        say(f"Copying {os.fsdecode(control)}/locals to {os.fsdecode(control)}/rcpthosts...")
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
        errors.write_line(2, b"config: fatal: unable to write to %s: %s"
                          % (control, errors.error_str(e)))
        return 111
    say("Now qmail will refuse to accept SMTP messages except to those hosts.")
    say("Make sure to change rcpthosts if you add hosts to locals or virtualdomains!")
    return 0


def main() -> None:
    sys.exit(run(auto.QMAIL_HOME, sys.stdout.buffer))
