"""This host's interface addresses (qmail's ipme.c), IPv4 by SIOCGIFCONF and
IPv6 from /proc/net/if_inet6; 127.0.0.1 and ::1 are always included.

`ipv4_fast()` reads the kernel's own list from /proc and needs no socket module,
for programs exec'd once per connection (qmail-smtpd); the socket modules are
imported only by the functions that use them.
"""
SIOCGIFCONF = 0x8912
IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux
FIB_TRIE = "/proc/net/fib_trie"


def ipv4() -> list[str]:
    """Every IPv4 address configured on an interface, 127.0.0.1 first."""
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
        if ip not in out:
            out.append(ip)
    return out


def ipv4_fast() -> list[str]:
    """ipv4() from /proc/net/fib_trie (each `/32 host LOCAL` leaf is an interface
    address); ipv4() itself when that file cannot be read."""
    try:
        with open(FIB_TRIE, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return ipv4()
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
    """Every IPv6 address configured on an interface, ::1 first."""
    import socket
    out = ["::1"]
    try:
        with open("/proc/net/if_inet6", "rb") as f:
            lines = f.read().split(b"\n")
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if not fields or len(fields[0]) != 32:
            continue
        ip = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0].decode()))
        if ip not in out:
            out.append(ip)
    return out
