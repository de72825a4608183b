"""Which host a process runs on, as an operator tells hosts apart: its hostname, and the
address it reaches Redis from. Hosts that share a hostname (network namespaces, containers
given the same name, cloned machines) differ by that address.

The address is the one the kernel picks as the source of a packet to Redis's host: a UDP
socket `connect`ed there sends nothing, and its local address is what the Redis connections'
sockets get too. For a Sentinel URL, the first Sentinel's host stands in for the primary,
which lies on the same network in any deployment genq knows. A Unix socket, or a host that
does not resolve, gives no address.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from genq.common.sentinel import is_sentinel_url, parse
from genq.common.settings import Settings

REDIS_PORT = 6379


@dataclass(frozen=True)
class Host:
    hostname: str
    address: str | None  # None: Redis on a Unix socket, or its host did not resolve

    def __str__(self) -> str:
        """`box (198.18.10.4)`, or `box`."""
        return self.hostname if self.address is None else f"{self.hostname} ({self.address})"


def this_host(settings: Settings) -> Host:
    return Host(socket.gethostname(), source_address(settings.redis_url))


def source_address(redis_url: str) -> str | None:
    """This host's address on the way to the Redis of `redis_url`."""
    target = _redis_address(redis_url)
    if target is None:
        return None
    try:
        family, kind, proto, _, where = socket.getaddrinfo(*target, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.connect(where)  # UDP: picks a route, sends nothing
            address: str = probe.getsockname()[0]
            return address
    except OSError:  # socket.gaierror is one
        return None


def _redis_address(redis_url: str) -> tuple[str, int] | None:
    if is_sentinel_url(redis_url):
        return parse(redis_url).sentinels[0]
    parts = urlsplit(redis_url)
    if parts.scheme == "unix" or parts.hostname is None:
        return None
    return parts.hostname, parts.port or REDIS_PORT
