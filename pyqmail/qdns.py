"""qmail-remote's DNS (qmail's dns.c) on dnspython: MX and A lookups with
qmail's temporary/permanent split, IP literals, and qmail's MX ordering; plus,
beyond qmail 1.03, AAAA records, `[IPv6:...]` literals and answers of any size
(a truncated UDP answer is asked again over TCP, as notqmail 1.09 does).

The server comes from /etc/resolv.conf (`nameserver` lines, `options timeout:N
attempts:N`), as the C library's stub resolver reads it; `DNSCACHEIP` (djbdns:
one or more IP addresses separated by spaces or commas) replaces those
servers, and `DNSCACHEPORT` (pyqmail's own) replaces port 53.
"""
import os
import socket
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

RESOLV_CONF = "/etc/resolv.conf"
MAXNS = 3          # resolv.h: the C library uses the first three servers
TIMEOUT = 5        # resolv.h RES_TIMEOUT, seconds per try
ATTEMPTS = 2       # resolv.h RES_DFLRETRY

A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
MX = dns.rdatatype.MX

INET = socket.AF_INET
INET6 = socket.AF_INET6


class Soft(Exception):
    """DNS_SOFT: the lookup may work later."""


class Hard(Exception):
    """DNS_HARD: the name or the data does not exist."""


def _server_ip(text: str) -> str | None:
    for family in (INET, INET6):
        try:
            socket.inet_pton(family, text)
            return text
        except OSError:
            pass
    return None


def servers_from(env: dict[bytes, bytes], resolv_conf: str = RESOLV_CONF
                 ) -> tuple[list[tuple[str, int]], float, int]:
    """The servers to ask, the seconds per try and the number of rounds."""
    port = 53
    if env.get(b"DNSCACHEPORT"):
        digits = env[b"DNSCACHEPORT"].decode("ascii", "replace")
        if digits.isdigit() and 0 < int(digits) < 65536:
            port = int(digits)
    timeout, attempts, ips = TIMEOUT, ATTEMPTS, []
    if env.get(b"DNSCACHEIP"):
        for word in env[b"DNSCACHEIP"].decode("ascii", "replace").replace(",", " ").split():
            if _server_ip(word) and len(ips) < 16:
                ips.append(word)
    else:
        try:
            with open(resolv_conf, "rb") as f:
                lines = f.read(65536).decode("ascii", "replace").splitlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver" and len(ips) < MAXNS:
                ip = _server_ip(fields[1].split("%")[0])
                if ip:
                    ips.append(ip)
            elif fields and fields[0] == "options":
                for option in fields[1:]:
                    name, _, value = option.partition(":")
                    if value.isdigit() and name == "timeout":
                        timeout = max(1, min(int(value), 30))
                    elif value.isdigit() and name == "attempts":
                        attempts = max(1, min(int(value), 5))
    if not ips:
        ips = ["127.0.0.1"]   # the C library's default
    return [(ip, port) for ip in ips], timeout, attempts


def to_name(host: bytes) -> dns.name.Name:
    """HOST as an absolute name (no search list); Hard if it cannot be one."""
    if host.endswith(b"."):
        host = host[:-1]
    try:
        if not host:
            return dns.name.root
        return dns.name.Name(host.split(b".") + [b""])
    except dns.exception.DNSException:
        raise Hard() from None


class Resolver:
    """A stub resolver: recursive queries, class IN, qmail's failure split."""

    def __init__(self, env: dict[bytes, bytes]):
        self.servers, self.timeout, self.attempts = servers_from(env)

    def _ask(self, query: dns.message.Message, server: tuple[str, int]) -> dns.message.Message:
        ip, port = server
        response = dns.query.udp(query, ip, timeout=self.timeout, port=port,
                                 ignore_unexpected=True)
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(query, ip, timeout=self.timeout, port=port)
        return response

    def query(self, host: bytes, rdtype) -> list:
        """The answer section's records of rdtype, in order; Soft or Hard on failure.

        spec/remote.md §7: temporary on no answer (refused, timeout), server
        failure or a malformed answer; permanent on NXDOMAIN, no data or any
        other error code."""
        name = to_name(host)
        query = dns.message.make_query(name, rdtype)
        query.flags |= dns.flags.RD
        response = None
        for _ in range(self.attempts):
            for server in self.servers:
                try:
                    response = self._ask(query, server)
                except (OSError, EOFError, dns.exception.DNSException):
                    continue
                if response.rcode() == dns.rcode.SERVFAIL:
                    response = None
                    continue
                break
            if response is not None:
                break
        if response is None:
            raise Soft()
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise Hard()
        if not response.answer:
            raise Hard()   # NO_DATA
        return [rdata for rrset in response.answer if rrset.rdtype == rdtype
                for rdata in rrset]


def scan_ip4(text: bytes) -> bytes | None:
    """ip_scan(): the whole of `d.d.d.d` (d = digits, modulo 256) as 4 bytes."""
    parts = text.split(b".")
    if len(parts) != 4 or not all(p and p.isdigit() for p in parts):
        return None
    return bytes(int(p) % 256 for p in parts)


def literal(host: bytes) -> tuple[int, bytes] | None:
    """An IP literal (`d.d.d.d`, `[d.d.d.d]`, `[IPv6:x:...]`) as (family, packed)."""
    if host.startswith(b"[") and host.endswith(b"]"):
        inner = host[1:-1]
        if inner[:5].lower() == b"ipv6:":
            try:
                return INET6, socket.inet_pton(INET6, inner[5:].decode("ascii"))
            except (OSError, UnicodeDecodeError, ValueError):
                return None
        ip = scan_ip4(inner)
    else:
        ip = scan_ip4(host)
    return None if ip is None else (INET, ip)


def ip_fmt(family: int, packed: bytes) -> bytes:
    """The address as qmail prints it (`192.0.2.25`; IPv6 in its short form)."""
    return socket.inet_ntop(family, packed).encode("ascii")


# An address to try: (preference, family, packed address).
Entry = tuple[int, int, bytes]


def ipplus(resolver: Resolver, host: bytes, pref: int) -> tuple[list[Entry], bool]:
    """dns_ipplus(): HOST's addresses with preference pref (a literal gets 0).

    Returns the addresses and whether a lookup failed temporarily; Hard when
    every lookup failed permanently."""
    lit = literal(host)
    if lit is not None:
        return [(0, lit[0], lit[1])], False
    if not host.rstrip(b"."):
        raise Hard()   # the root (a null MX, RFC 7505) has no addresses
    found: list[Entry] = []
    soft = hard = False
    for rdtype, family in ((A, INET), (AAAA, INET6)):
        try:
            records = resolver.query(host, rdtype)
        except Soft:
            soft = True
            continue
        except Hard:
            hard = True
            continue
        for rdata in records:
            found.append((pref, family, socket.inet_pton(family, rdata.address)))
    if not found and hard and not soft:
        raise Hard()
    return found, soft


def dns_ip(resolver: Resolver, host: bytes) -> list[Entry]:
    """dns_ip(): HOST's addresses with preference 0; Soft or Hard."""
    found, soft = ipplus(resolver, host, 0)
    if soft and not found:
        raise Soft()
    return found


def next_mx(mx: list[tuple[int, bytes]], random: int) -> tuple[int, int]:
    """dns_mxip()'s choice: (index of the next MX, new random state).

    The lowest preference wins; among equal ones a later entry replaces the
    choice when its random draw says so.  The state is a 32-bit unsigned long
    (qmail's arithmetic on 32-bit machines), so ties come out near-uniformly
    random; with 64 bits the draw would practically never succeed."""
    i = 0
    numsame = 1
    for j in range(1, len(mx)):
        if mx[j][0] < mx[i][0]:
            i = j
            numsame = 1
        elif mx[j][0] == mx[i][0]:
            numsame += 1
            random = (random * 69069 + 1) & 0xFFFFFFFF
            if random // 2 < 2147483647 // numsame:
                i = j
    return i, random


def dns_mxip(resolver: Resolver, host: bytes, random: int) -> tuple[list[Entry], bool]:
    """dns_mxip(): the addresses of HOST's MXs in qmail's order, and whether a
    target's lookup failed temporarily; Soft or Hard for the MX lookup itself."""
    lit = literal(host)
    if lit is not None:
        return [(0, lit[0], lit[1])], False
    try:
        records = resolver.query(host, MX)
    except Hard:
        return dns_ip(resolver, host), False
    mx = [(rdata.preference, b".".join(rdata.exchange.labels).rstrip(b"."))
          for rdata in records]
    if not mx:
        return dns_ip(resolver, host), False   # e.g. a CNAME to an A
    found: list[Entry] = []
    flagsoft = False
    while mx:
        i, random = next_mx(mx, random)
        pref, target = mx[i]
        if target == b"":
            target = b"."
        try:
            addresses, soft = ipplus(resolver, target, pref)
            found += addresses
            flagsoft = flagsoft or soft
        except Hard:
            pass
        mx[i] = mx[-1]
        mx.pop()
    return found, flagsoft


def preload() -> None:
    """Load the record classes dnspython loads on first use, so that a forking
    parent (qmail-rspawn) does it once instead of in every child."""
    import dns.rdata
    import dns.rdataclass
    for rdtype in (A, AAAA, MX, dns.rdatatype.CNAME):
        dns.rdata.get_rdata_class(dns.rdataclass.IN, rdtype)


def seed() -> int:
    """qmail-remote's `now() + (getpid() << 16)`."""
    return (int(time.time()) + (os.getpid() << 16)) & 0xFFFFFFFF
