"""Redis connections, and translation of redis-py's errors into genq's at the boundary."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio

from genq.common.errors import RedisUnavailable
from genq.common.settings import Settings

CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 30
# Every reply is awaited at most this long. Without it (redis-py before 8 has none by
# default) a call on a connection whose peer was cut off mid-call (a partitioned host, a
# pulled cable) waits until the kernel stops retransmitting, about 15 minutes: a worker's
# publishing and lease renewal, a reader, stuck that long (tests/hosts/test_partition.py).
# With it the call fails as RedisUnavailable and its caller's retry or abandonment takes
# over. It must exceed the longest blocking read genq issues: a stream reader's XREAD BLOCK
# of at most 1 s (genq.producer.client.POLL_S).
SOCKET_TIMEOUT_S = 5.0
# TCP keepalive, so that an idle connection to a peer that vanished (a pooled one, a
# subscriber's) is known dead within KEEPIDLE + KEEPCNT * KEEPINTVL = 30 s, not Linux's 2 h.
KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_PROBES = 10, 5, 4
# Connection pools are blocking: a command that finds every connection of its pool in use
# waits this long for one, then fails as RedisUnavailable (redis-py's default pool raises at
# once, MaxConnectionsError, when it holds 100). Each process sizes its pool to what it holds
# at once: `pool_size` for a client, `worker_pool_size`, the gateway's GENQ_GATEWAY_MAX_STREAMS.
POOL_WAIT_S = 10.0
# A client's (Client(pool_size=...) changes it): what its threads or tasks run at once, a
# stream's blocking read among them; one more waits, rather than failing as it did at 100.
POOL_SIZE = 128
# A worker's job holds up to three at once: its thread publishing, its outbox's flusher and
# its lease's renewal; the margin is the heartbeat, hand-off and the task's own reads.
CONNECTIONS_PER_SLOT, WORKER_MARGIN = 3, 16


def keepalive_options() -> dict[int, int]:
    """The keepalive timings, where the platform names them (macOS has no TCP_KEEPIDLE)."""
    wanted = {
        "TCP_KEEPIDLE": KEEPALIVE_IDLE_S,
        "TCP_KEEPINTVL": KEEPALIVE_INTERVAL_S,
        "TCP_KEEPCNT": KEEPALIVE_PROBES,
    }
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


def connection_options(url: str) -> dict[str, Any]:
    """redis-py's options for every connection genq makes to Redis at `url`. A Unix socket
    has no TCP keepalive (redis-py's socket connection refuses the option)."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }
    if urlsplit(url).scheme != "unix":
        options.update(socket_keepalive=True, socket_keepalive_options=keepalive_options())
    return options


def worker_pool_size(slots: int) -> int:
    """The connections a worker process of `slots` slots (all its models') holds at most."""
    return slots * CONNECTIONS_PER_SLOT + WORKER_MARGIN


def connect(settings: Settings, pool_size: int = POOL_SIZE) -> redis.Redis:
    """A client on a blocking pool of `pool_size` connections (opened as needed)."""
    url = settings.redis_url
    options = connection_options(url)
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=POOL_WAIT_S, **options
    )
    return redis.Redis.from_pool(pool)  # the client closes its pool


def connect_bytes(settings: Settings, timeout_s: float | None = None) -> redis.Redis:
    """A client whose replies stay bytes (no decoding): the relay moves frames through as
    they came. `timeout_s` bounds a connect and each reply (None: a connect takes up to
    CONNECT_TIMEOUT_S, a reply as long as it takes)."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=timeout_s or CONNECT_TIMEOUT_S,
        socket_timeout=timeout_s,
    )


def connect_async(settings: Settings, pool_size: int = POOL_SIZE) -> redis.asyncio.Redis:
    """An asyncio client on a blocking pool of `pool_size` connections. A stream's reader
    holds one for each blocking read: a process that follows many streams sizes for them."""
    url = settings.redis_url
    options = connection_options(url)
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=POOL_WAIT_S, **options
    )
    return redis.asyncio.Redis.from_pool(pool)


def unavailable(settings: Settings, exc: Exception) -> RedisUnavailable:
    return RedisUnavailable(f"cannot reach Redis at {settings.redacted_redis_url}: {exc}")


@contextmanager
def redis_errors(settings: Settings) -> Iterator[None]:
    """Turn a connection failure into RedisUnavailable; the message never shows a password."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise unavailable(settings, exc) from exc
