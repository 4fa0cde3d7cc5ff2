"""This host's interface addresses (qmail's ipme.c), IPv4 by SIOCGIFCONF and
IPv6 from /proc/net/if_inet6; 127.0.0.1 and ::1 are always included.

`ipv4_fast()` lists the addresses over rtnetlink with _socket, _struct and
fcntl only, for programs exec'd once per connection (qmail-smtpd): socket.py,
struct and array cost such a start milliseconds, and are imported only by the
functions that use them.
"""
import errno
import os

SIOCGIFCONF = 0x8912
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux
# rtnetlink(7)
NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_HEADER = "=IHHII"        # struct nlmsghdr: len, type, flags, seq, pid
IFADDRMSG = "=BBBBI"           # struct ifaddrmsg: family, prefixlen, flags, scope, index
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
DUMP_MAX = 1 << 22             # bytes of replies to one dump: more is not a host's interfaces


def is_up(sock, name: bytes) -> bool:
    """ipme.c's SIOCGIFFLAGS test: the interface exists and is up."""
    import _struct
    import fcntl
    try:
        ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, _struct.pack("16s24x", name[:15]))
    except OSError:
        return False
    return bool(_struct.unpack_from("H", ifreq, 16)[0] & IFF_UP)


def ipv4() -> list[str]:
    """Every IPv4 address of an interface that is up, 127.0.0.1 first."""
    import array
    import fcntl
    import socket
    import struct
    out = ["127.0.0.1"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        size = 64 * IFREQ_SIZE
        while True:
            buf = array.array("B", b"\0" * size)
            ifconf = struct.pack("iL", size, buf.buffer_info()[0])
            used = struct.unpack("iL", fcntl.ioctl(s.fileno(), SIOCGIFCONF, ifconf))[0]
            if used < size:
                break
            size *= 2
        data = buf.tobytes()[:used]
        for i in range(0, used, IFREQ_SIZE):
            ip = socket.inet_ntoa(data[i + 20:i + 24])
            if ip not in out and is_up(s, data[i:i + 16].split(b"\0", 1)[0]):
                out.append(ip)
    return out


def netlink_dump(sock, kind: int, body: bytes):
    """One rtnetlink dump request on sock: yields (type, data, start, end) for
    each reply message up to NLMSG_DONE, its payload data[start:end]; OSError
    on an error reply or a malformed one."""
    import _struct
    sock.send(_struct.pack(NLMSG_HEADER, 16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
              + body)
    total = 0
    while True:
        data = sock.recv(65536)
        total += len(data)
        if not data or total > DUMP_MAX:
            raise OSError(errno.EIO, "bad rtnetlink reply")
        offset = 0
        while offset + 16 <= len(data):
            length, mtype = _struct.unpack_from("=IH", data, offset)
            if length < 16 or offset + length > len(data):
                raise OSError(errno.EIO, "bad rtnetlink reply")
            if mtype == NLMSG_DONE:
                return
            if mtype == NLMSG_ERROR:
                code = -_struct.unpack_from("=i", data, offset + 16)[0] if length >= 20 else 0
                raise OSError(code or errno.EIO, os.strerror(code or errno.EIO))
            yield mtype, data, offset + 16, offset + length
            offset += (length + 3) & ~3


def address_attributes(data: bytes, start: int, end: int) -> tuple[bytes | None, bytes]:
    """An RTM_NEWADDR message, data[start:end]: the 4 bytes of its IFA_LOCAL
    (what SIOCGIFCONF reports), else of its IFA_ADDRESS, and its IFA_LABEL."""
    import _struct
    found = {}
    offset = start + 8
    while offset + 4 <= end:
        length, kind = _struct.unpack_from("=HH", data, offset)
        if length < 4 or offset + length > end:
            break
        if kind in (IFA_LOCAL, IFA_ADDRESS, IFA_LABEL):
            found[kind] = data[offset + 4:offset + length]
        offset += (length + 3) & ~3
    raw = found.get(IFA_LOCAL, found.get(IFA_ADDRESS))
    return (raw if raw is not None and len(raw) == 4 else None), \
        found.get(IFA_LABEL, b"").partition(b"\0")[0]


def ipv4_fast() -> list[str]:
    """ipv4() with the list from rtnetlink instead of SIOCGIFCONF: each IPv4
    address with its label, kept if SIOCGIFFLAGS says that interface is up
    (ipme.c's test); ipv4() itself when netlink cannot be asked."""
    import _socket
    import _struct
    try:
        sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                              NETLINK_ROUTE)
    except (OSError, AttributeError):
        return ipv4()
    try:
        out = ["127.0.0.1"]
        request = _struct.pack(IFADDRMSG, _socket.AF_INET, 0, 0, 0, 0)
        for kind, data, start, end in netlink_dump(sock, RTM_GETADDR, request):
            if kind != RTM_NEWADDR or end - start < 8 or data[start] != _socket.AF_INET:
                continue
            raw, label = address_attributes(data, start, end)
            if raw is None:
                continue
            ip = "%d.%d.%d.%d" % tuple(raw)
            if ip not in out and is_up(sock, label):
                out.append(ip)
        return out
    except OSError:
        return ipv4()
    finally:
        sock.close()


def ipv6() -> list[str]:
    """Every IPv6 address of an interface that is up, ::1 first."""
    import socket
    out = ["::1"]
    try:
        with open("/proc/net/if_inet6", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return out
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for line in lines:
            fields = line.split()
            if len(fields) < 6 or len(fields[0]) != 32:
                continue
            ip = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0].decode()))
            if ip not in out and is_up(s, fields[5]):
                out.append(ip)
    return out
