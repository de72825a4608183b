"""Redis connections, and translation of redis-py's errors into genq's at the boundary."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from genq.common.errors import RedisNotPrimary, RedisUnavailable
from genq.common.sentinel import SentinelUrl, is_sentinel_url, parse
from genq.common.settings import Settings
from genq.common.store.command import run
from genq.common.store.replication import PRIMARY_ROLE, primary_address, role

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
    if is_sentinel_url(url):
        return sentinel_client(parse(url), options, pool_size)
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=pool_size, timeout=POOL_WAIT_S, **options
    )
    return redis.Redis.from_pool(pool)  # the client closes its pool


def connect_bytes(settings: Settings, timeout_s: float | None = None) -> redis.Redis:
    """A client whose replies stay bytes (no decoding): the relay moves frames through as
    they came. `timeout_s` bounds a connect and each reply (None: a connect takes up to
    CONNECT_TIMEOUT_S, a reply as long as it takes)."""
    options = {
        "socket_connect_timeout": timeout_s or CONNECT_TIMEOUT_S,
        "socket_timeout": timeout_s,
    }
    if is_sentinel_url(settings.redis_url):
        return sentinel_client(parse(settings.redis_url), options)
    return redis.Redis.from_url(settings.redis_url, **options)


def connect_async(settings: Settings, pool_size: int = POOL_SIZE) -> redis.asyncio.Redis:
    """An asyncio client on a blocking pool of `pool_size` connections. A stream's reader
    holds one for each blocking read: a process that follows many streams sizes for them."""
    url = settings.redis_url
    options = connection_options(url)
    if is_sentinel_url(url):
        return sentinel_client_async(parse(url), options, pool_size)
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


def sentinel_options(url: SentinelUrl, options: dict[str, Any]) -> dict[str, Any]:
    """The options of a connection to a Sentinel: the timeouts of `options` and the
    Sentinels' own password (not Redis's)."""
    sentinel = {name: value for name, value in options.items() if name.startswith("socket_")}
    if url.sentinel_password:
        sentinel["password"] = url.sentinel_password
    return sentinel


def sentinel_client(
    url: SentinelUrl, options: dict[str, Any], pool_size: int = POOL_SIZE
) -> redis.Redis:
    """A client of the primary the Sentinels name: each new connection asks them where it
    is, so that after a failover the client reaches the promoted replica by itself. Its pool
    holds `pool_size` connections but does not wait for one (redis-py has no blocking
    Sentinel pool): past them a command fails as MaxConnectionsError."""
    sentinels = redis.sentinel.Sentinel(
        url.sentinels, sentinel_kwargs=sentinel_options(url, options), **options
    )
    client: redis.Redis = sentinels.master_for(
        url.primary, max_connections=pool_size, **url.redis_options()
    )
    return client


def sentinel_client_async(
    url: SentinelUrl, options: dict[str, Any], pool_size: int = POOL_SIZE
) -> redis.asyncio.Redis:
    """The async face of `sentinel_client`."""
    sentinels = redis.asyncio.sentinel.Sentinel(
        url.sentinels, sentinel_kwargs=sentinel_options(url, options), **options
    )
    client: redis.asyncio.Redis = sentinels.master_for(
        url.primary, max_connections=pool_size, **url.redis_options()
    )
    return client


ROLES = {"slave": "replica"}  # ROLE's words, as genq's messages say them


def check_primary(settings: Settings) -> None:
    """Before a command queues anything: RedisNotPrimary if GENQ_REDIS_URL leads to a replica,
    or names a primary its Sentinels do not know; RedisUnavailable if none of its Sentinels
    answers. A plain URL whose Redis does not answer passes (the command's own handling of
    a lost Redis applies)."""
    if is_sentinel_url(settings.redis_url):
        address = _ask_sentinels(settings, parse(settings.redis_url))
        where = f"{address[0]}:{address[1]}, named by the Sentinels as the primary"
    else:
        where = settings.redacted_redis_url
    try:
        with connect(settings) as client:
            found = run(client, role())
    except (redis.ConnectionError, redis.TimeoutError):
        return
    if found != PRIMARY_ROLE:
        raise RedisNotPrimary(
            f"Redis at {where} is a {ROLES.get(found, found)}, not a primary: genq writes "
            "to the primary (a redis+sentinel:// URL finds it after a failover)"
        )


def _ask_sentinels(settings: Settings, url: SentinelUrl) -> tuple[str, int]:
    """The primary's address, from the first Sentinel that answers."""
    failures = []
    for host, port in url.sentinels:
        options = sentinel_options(url, connection_options(settings.redis_url))
        try:
            with redis.Redis(host, port, **options) as sentinel:
                address = run(sentinel, primary_address(url.primary))
        except redis.RedisError as exc:
            failures.append(f"{host}:{port}: {exc}")
            continue
        if address is None:
            raise RedisNotPrimary(
                f"the Sentinel at {host}:{port} monitors no primary named {url.primary!r} "
                f"({settings.redacted_redis_url})"
            )
        return address
    raise RedisUnavailable(
        f"no Sentinel answered for {settings.redacted_redis_url}: {'; '.join(failures)}"
    )
