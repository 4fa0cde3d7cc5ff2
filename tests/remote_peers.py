"""Peers for the remote-delivery tests, all on loopback: a scripted SMTP server
(a thread in the test), dnsmasq serving the test domains, Postfix's smtp-sink,
and a DNS server that answers SERVFAIL."""
import os
import shutil
import socket
import subprocess
import threading
import time

import dns.message
import dns.query
import dns.rcode

import pytest

DROP = object()   # a scripted reply: close the connection instead


class Session:
    def __init__(self):
        self.lines: list[bytes] = []   # every command line, CR LF included
        self.data: bytes | None = None  # the DATA bytes as received, up to CR LF . CR LF


class Peer:
    """An SMTP server whose replies a test chooses.

    `replies` maps `greeting`, `EHLO`, `HELO`, `MAIL`, `RCPT`, `RCPT <addr>`,
    `DATA`, `END` (after the dot) to reply bytes or DROP; `delay` maps the same
    keys to seconds to wait first; `gate` (a threading.Barrier) is passed by
    every session before its greeting."""

    DEFAULTS = {
        "greeting": b"220 peer.test ESMTP\r\n",
        "EHLO": b"250-peer.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        "HELO": b"250 peer.test\r\n",
        "MAIL": b"250 ok\r\n",
        "RCPT": b"250 ok\r\n",
        "DATA": b"354 go ahead\r\n",
        "END": b"250 ok 1709629621 qp 4242\r\n",
        "QUIT": b"221 bye\r\n",
    }

    def __init__(self, host: str = "127.0.0.1", port: int = 0, replies=None,
                 delay=None, gate=None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.host = host
        self.port = self.listener.getsockname()[1]
        self.replies = dict(self.DEFAULTS, **(replies or {}))
        self.delay = delay or {}
        self.gate = gate
        self.sessions: list[Session] = []
        self.stopping = False
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self.accept, daemon=True)
        self.acceptor.start()

    def accept(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            session = Session()
            self.sessions.append(session)
            t = threading.Thread(target=self.serve, args=(conn, session), daemon=True)
            self.threads.append(t)
            t.start()

    def say(self, conn, key) -> bool:
        if self.delay.get(key):
            time.sleep(self.delay[key])
        reply = self.replies[key]
        if reply is DROP:
            return False
        conn.sendall(reply)
        return True

    def serve(self, conn, session):
        conn.settimeout(20)
        buf = b""
        try:
            if self.gate is not None:
                self.gate.wait(timeout=20)
            if not self.say(conn, "greeting"):
                return
            while True:
                while b"\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                line, buf = buf.split(b"\n", 1)
                line += b"\n"
                session.lines.append(line)
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper().decode()
                key = verb
                if verb == "RCPT":
                    addr = line[line.find(b"<") + 1:line.rfind(b">")].decode("latin-1")
                    key = "RCPT " + addr if "RCPT " + addr in self.replies else "RCPT"
                if key not in self.replies:
                    conn.sendall(b"502 unimplemented\r\n")
                    continue
                if not self.say(conn, key):
                    return
                if verb == "QUIT":
                    return
                if verb == "DATA" and self.replies["DATA"][:1] == b"3":
                    while b"\r\n.\r\n" not in b"\r\n" + buf:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    # the bytes through the final `.` CR LF (a CR LF before it
                    # belongs to the last line)
                    end = (b"\r\n" + buf).index(b"\r\n.\r\n") + 3
                    session.data, buf = buf[:end], buf[end:]
                    if not self.say(conn, "END"):
                        return
        except OSError:
            return
        finally:
            conn.close()

    def close(self):
        self.stopping = True
        self.acceptor.join(5)
        self.listener.close()
        for t in self.threads:
            t.join(5)


def free_port(host: str = "127.0.0.1") -> int:
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Dnsmasq:
    """dnsmasq answering for the test domains only, on a loopback address."""

    def __init__(self, records: list[str], address: str = "127.0.53.1"):
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not os.path.exists(binary):
            pytest.skip("dnsmasq not installed (Debian dnsmasq-base)")
        self.address = address
        self.port = free_port(address)
        self.proc = subprocess.Popen(
            [binary, "--no-daemon", "--port=%d" % self.port, "--listen-address=" + address,
             "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
             "--user=nobody", "--log-facility=-"] + records,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                dns.query.udp(dns.message.make_query("probe.invalid", "A"), address,
                              port=self.port, timeout=0.2)
                break
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail("dnsmasq did not start")

    def env(self) -> dict[str, str]:
        return {"DNSCACHEIP": self.address, "DNSCACHEPORT": str(self.port)}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class ServFail:
    """A DNS server that answers every query with SERVFAIL."""

    def __init__(self, address: str = "127.0.53.2"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.settimeout(0.1)
        self.address, self.port = address, self.sock.getsockname()[1]
        self.stopping = False
        self.queries = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                wire, peer = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            query = dns.message.from_wire(wire)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            self.queries += 1
            self.sock.sendto(response.to_wire(), peer)

    def env(self) -> dict[str, str]:
        return {"DNSCACHEIP": self.address, "DNSCACHEPORT": str(self.port)}

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


class SmtpSink:
    """Postfix's smtp-sink on a loopback port in 26000-26999, dumping each
    message into a directory."""

    def __init__(self, dump_dir: str, host: str = "127.0.0.1", extra=()):
        binary = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
        if not os.path.exists(binary):
            pytest.skip("smtp-sink not installed (Debian postfix)")
        os.chmod(dump_dir, 0o777)
        for port in range(26000 + os.getpid() % 900, 27000):
            probe = socket.socket()
            try:
                probe.bind((host, port))
            except OSError:
                continue
            finally:
                probe.close()
            self.port = port
            break
        self.proc = subprocess.Popen(
            [binary, "-u", "nobody", "-d", os.path.join(dump_dir, "%M."), *extra,
             "%s:%d" % (host, self.port), "16"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((host, self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail("smtp-sink did not start")
                time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
