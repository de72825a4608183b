"""Just enough RESP2 over a plain socket for the relay benchmark's load generator and
prototype: commands encoded by hand, replies counted with bytes.find.

This is not a client: no reconnects, no RESP3, no errors raised. It exists so that the
processes generating load (and the prototype relay) spend as little CPU as Python allows,
on a machine whose cores the measured relay and redis-server need.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

RECV_BYTES = 1 << 20
CRLF = b"\r\n"


def connect(url: str) -> socket.socket:
    """A TCP connection to the redis:// URL's host and port (its database is not selected:
    pub/sub and the benchmark's keys do not need one)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Replies:
    """Counts the replies to pipelined commands whose replies are one line, one bulk string
    (PUBLISH, XADD, INCRBY) or an array of error strings (genq's APPEND script); keeps the
    errors."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = b""
        self.errors: list[bytes] = []

    def read(self, count: int) -> None:
        buf, pos, listed = self._buf, 0, 0  # listed: array elements still to read
        while count or listed:
            end = buf.find(CRLF, pos)
            if end < 0:
                buf, pos = buf[pos:] + self._recv(), 0
                continue
            kind, line = buf[pos : pos + 1], buf[pos + 1 : end]
            if kind == b"$" and line != b"-1":
                skip = end + 2 + int(line) + 2
                if skip > len(buf):
                    buf, pos = buf[pos:] + self._recv(), 0
                    continue
                if listed:
                    self.errors.append(buf[end + 2 : skip - 2])
                end = skip - 2
            elif kind == b"-":
                self.errors.append(line)
            pos = end + 2
            if listed:
                listed -= 1
            else:
                count -= 1
                listed = max(int(line), 0) if kind == b"*" else 0
        self._buf = buf[pos:]

    def _recv(self) -> bytes:
        data = self._sock.recv(RECV_BYTES)
        if not data:
            raise ConnectionError("redis-server closed the connection")
        return data
