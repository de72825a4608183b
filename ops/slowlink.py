"""A slow, lossy link between one namespace host and Redis: 50 ms each way and 1% loss.

Where the kernel has netem (`tc qdisc … netem`), the host's link gets it, both directions.
Where it has not (a kernel without sch_netem), a TCP proxy in this process stands in front of
Redis for that host: every chunk it forwards is held DELAY_S, and one chunk in a hundred
LOSS_RATE another RETRANSMIT_S, as TCP delivers a lost segment: late, by a retransmission
timeout, and holding back what follows it (no byte is dropped: on TCP, loss is delay).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from ops.netns import PREFIX, Host, Network

DELAY_S = 0.050
LOSS_RATE = 0.01
RETRANSMIT_S = 0.200  # Linux's minimum retransmission timeout
CHUNK_BYTES = 65536


class SlowLink(Protocol):
    how: str  # said in the test's output: "netem" or "proxy (no netem: …)"

    def url_for(self, url: str) -> str:
        """The Redis URL that the slow host is to use."""
        ...

    def remove(self) -> None: ...

    def summary(self) -> str:
        """How it was made slow, and what went over it."""
        ...


def netem_missing() -> str | None:
    """Why netem cannot be used here, or None: tried on a throwaway veth pair."""
    probe = f"{PREFIX}{os.getpid():06x}netem"  # a leftover is recognised as ops.netns's
    try:
        pair = ["ip", "link", "add", probe, "type", "veth", "peer", "name", f"{probe}p"]
        subprocess.run(pair, check=True, capture_output=True, timeout=10)
        done = subprocess.run(
            ["tc", "qdisc", "add", "dev", probe, "root", "netem", "delay", "1ms"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        subprocess.run(["ip", "link", "del", probe], capture_output=True, check=False, timeout=10)
    return None if done.returncode == 0 else (done.stderr.strip() or "tc netem failed")


def slow_link(network: Network, host: str, redis_address: str, redis_port: int) -> SlowLink:
    """`host`'s link to Redis made slow: by netem where the kernel has it, else by a proxy."""
    missing = netem_missing()
    if missing is None:
        return Netem(network[host]).apply()
    proxy = DelayProxy(network.gateway_address, (redis_address, redis_port))
    proxy.how = f"proxy (no netem here: {missing})"
    return proxy.start()


@dataclass
class Netem:
    """netem on both ends of the host's veth pair: delay and loss each way."""

    host: Host
    how: str = "netem"

    def _ends(self) -> list[list[str]]:
        inside = [*self.host.exec_prefix(), "tc", "qdisc", "{verb}", "dev", "eth0", "root"]
        return [["tc", "qdisc", "{verb}", "dev", self.host.link, "root"], inside]

    def apply(self) -> Netem:
        spec = ["netem", "delay", f"{DELAY_S * 1000:.0f}ms", "loss", f"{LOSS_RATE * 100:g}%"]
        for end in self._ends():
            command = [word.format(verb="add") for word in end]
            subprocess.run([*command, *spec], check=True, timeout=10)
        return self

    def url_for(self, url: str) -> str:
        return url

    def summary(self) -> str:
        return self.how

    def remove(self) -> None:
        for end in self._ends():
            command = [word.format(verb="del") for word in end]
            subprocess.run(command, capture_output=True, check=False, timeout=10)


@dataclass
class DelayProxy:
    """Listens on `address` (the bridge's, in this process), forwards to `upstream`."""

    address: str
    upstream: tuple[str, int]
    how: str = "proxy"
    chunks: int = 0  # forwarded, either way
    lost: int = 0  # of them, held back as a lost segment would be
    delay_s: float = DELAY_S
    loss_rate: float = LOSS_RATE
    _listener: socket.socket = field(init=False)
    _stopped: threading.Event = field(default_factory=threading.Event)
    _sockets: list[socket.socket] = field(default_factory=list)
    _random: random.Random = field(default_factory=lambda: random.Random(0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def summary(self) -> str:
        return f"{self.how}; {self.chunks} chunks forwarded, {self.lost} held back as lost"

    def url_for(self, url: str) -> str:
        """`url` with this proxy's address and port in place of Redis's."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@" if auth else ""
        return parts._replace(netloc=f"{netloc}{self.address}:{self.port}").geturl()

    def start(self) -> DelayProxy:
        self._listener = socket.create_server((self.address, 0))
        self._listener.settimeout(0.5)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def remove(self) -> None:
        self._stopped.set()
        with self._lock:
            for sock in [self._listener, *self._sockets]:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            self._pipe(client, upstream)
            self._pipe(upstream, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        queue = _Delayed()
        threading.Thread(target=self._read, args=(source, sink, queue), daemon=True).start()
        threading.Thread(target=self._write, args=(sink, source, queue), daemon=True).start()

    def _read(self, source: socket.socket, sink: socket.socket, queue: _Delayed) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(CHUNK_BYTES):
                lost = self._random.random() < self.loss_rate
                self.chunks, self.lost = self.chunks + 1, self.lost + lost
                queue.put(time.monotonic() + self.delay_s + (RETRANSMIT_S if lost else 0), chunk)
        queue.put(time.monotonic() + self.delay_s, b"")  # the end, in order

    def _write(self, sink: socket.socket, source: socket.socket, queue: _Delayed) -> None:
        with contextlib.suppress(OSError):
            while chunk := queue.get():
                sink.sendall(chunk)
        for sock in (sink, source):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Delayed:
    """Chunks in order, each handed out at its due time; a late one holds back those behind
    it, as on TCP (so due times never go backwards)."""

    def __init__(self) -> None:
        self._items: deque[tuple[float, bytes]] = deque()
        self._last_due = 0.0
        self._ready = threading.Condition()

    def put(self, due: float, chunk: bytes) -> None:
        with self._ready:
            self._last_due = max(due, self._last_due)
            self._items.append((self._last_due, chunk))
            self._ready.notify()

    def get(self) -> bytes:
        with self._ready:
            while not self._items:
                self._ready.wait()
            due, chunk = self._items.popleft()
        time.sleep(max(0.0, due - time.monotonic()))  # the link's delay itself
        return chunk
