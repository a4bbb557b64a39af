"""A fault-injecting HTTP proxy for tests: sits between a client and a real server.

Each request is identified by its method, path, query string and body; the n-th
time the proxy sees the same request it looks up ``(seed, request, n)`` in a
seeded schedule, so the faults a pull meets do not depend on thread timing.

Faults: ``500``, ``503``, ``429`` (with ``Retry-After``), ``reset`` (the connection is
closed with RST, no answer), ``stall`` (no answer for ``stall`` seconds, then close),
``truncate`` (the upstream answer with its full ``Content-Length`` but half the
body), and ``delay`` (the answer, ``delay`` seconds late). ``faulty_attempts`` bounds
how many tries of one request may fail, so that a retry budget larger than it
always succeeds; ``always`` makes every request fail.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

FAULTS = ("500", "503", "429", "reset", "stall", "truncate")
#: not a transport fault: a 400 whose body echoes the request's Authorization header (a careless server)
ECHO_AUTH = "echo_auth"
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade", "content-length"}


@dataclass
class Schedule:
    """Which fault the n-th try of a request meets."""

    seed: int = 1
    rate: float = 0.3
    faults: Sequence[str] = FAULTS
    faulty_attempts: int = 2
    always: str | None = None
    retry_after: str = "0"
    stall: float = 1.0
    delay: float = 0.0
    after: int = 0  # the first `after` requests pass untouched

    def pick(self, key: bytes, attempt: int, serial: int) -> str | None:
        if serial < self.after:
            return "delay" if self.delay else None
        if self.always:
            return self.always
        if attempt >= self.faulty_attempts:
            return "delay" if self.delay else None
        h = hashlib.blake2b(key + struct.pack("<qq", self.seed, attempt), digest_size=8).digest()
        x = int.from_bytes(h, "little") / 2**64
        if x < self.rate:
            return self.faults[int(x / self.rate * len(self.faults)) % len(self.faults)]
        return "delay" if self.delay else None


@dataclass
class ProxyStats:
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    headers_seen: list[dict[str, str]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    upstream: str
    schedule: Schedule
    stats: ProxyStats
    seen: Counter[bytes]
    lock: threading.Lock
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._proxy()

    def do_POST(self) -> None:  # noqa: N802
        self._proxy()

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        key = self.command.encode() + b" " + self.path.encode() + b"\n" + body
        with self.lock:
            attempt = self.seen[key]
            self.seen[key] += 1
            serial = self.stats.requests
            self.stats.requests += 1
            self.stats.headers_seen.append(dict(self.headers.items()))
        fault = self.schedule.pick(key, attempt, serial)
        if fault and fault != "delay":
            with self.lock:
                self.stats.faults[fault] += 1
        if fault == ECHO_AUTH:
            msg = f"bad request; you sent Authorization: {self.headers.get('Authorization')}".encode()
            self.send_response(400)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        if fault in ("500", "503", "429"):
            msg = b"injected fault"
            self.send_response(int(fault))
            if fault == "429":
                self.send_header("Retry-After", self.schedule.retry_after)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        if fault == "reset":
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        if fault == "stall":
            time.sleep(self.schedule.stall)
            self.close_connection = True
            return
        if fault == "delay":
            time.sleep(self.schedule.delay)
        status, headers, data = self._forward(body)
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in _HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault == "truncate":
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        up = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname or "127.0.0.1", up.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP and k.lower() != "host"}
            if body:
                headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()


@contextlib.contextmanager
def fault_proxy(upstream: str, schedule: Schedule | None = None) -> Iterator[tuple[str, ProxyStats]]:
    """Run the proxy on 127.0.0.1:<free port> in front of ``upstream``; yield (URL, stats)."""
    stats = ProxyStats()
    handler = type(
        "Handler",
        (_Handler,),
        {"upstream": upstream, "schedule": schedule or Schedule(), "stats": stats, "seen": Counter(), "lock": threading.Lock()},
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", stats
    finally:
        server.shutdown()
        server.server_close()
