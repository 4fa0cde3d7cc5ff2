"""This host's interface addresses (qmail's ipme.c), IPv4 by SIOCGIFCONF and
IPv6 from /proc/net/if_inet6; 127.0.0.1 and ::1 are always included.

`ipv4_fast()` reads the kernel's own list from /proc and needs no socket module,
for programs exec'd once per connection (qmail-smtpd); the socket modules are
imported only by the functions that use them.
"""
import os

from pyqmail import fdio

SIOCGIFCONF = 0x8912
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux
FIB_TRIE = "/proc/net/fib_trie"
FIB_TRIE_MAX = 1 << 20   # a bigger routing table: ask the interfaces (ipv4()) instead


def is_up(sock, name: bytes) -> bool:
    """ipme.c's SIOCGIFFLAGS test: the interface exists and is up."""
    import fcntl
    import struct
    try:
        ifreq = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, struct.pack("16s24x", name[:15]))
    except OSError:
        return False
    return bool(struct.unpack_from("H", ifreq, 16)[0] & IFF_UP)


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


def ipv4_fast() -> list[str]:
    """ipv4() from /proc/net/fib_trie (each `/32 host LOCAL` leaf is an interface
    address); ipv4() itself when that file cannot be read."""
    try:
        fd = os.open(FIB_TRIE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ipv4()
    try:
        lines = fdio.read_all(fd, FIB_TRIE_MAX).split(b"\n")
    except (OSError, fdio.LineTooLong):
        return ipv4()
    finally:
        os.close(fd)
    out = ["127.0.0.1"]
    leaf = None
    for line in lines:
        fields = line.split()
        if fields[:1] == [b"|--"] and len(fields) == 2:
            leaf = fields[1].decode("ascii", "replace")
        elif fields[:3] == [b"/32", b"host", b"LOCAL"] and leaf is not None and leaf not in out:
            out.append(leaf)
    return out


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
