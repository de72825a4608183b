"""Redis connections, and translation of redis-py's errors into genq's at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio

from genq.common.errors import RedisUnavailable
from genq.common.settings import Settings

CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 30


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )


def connect_bytes(settings: Settings, timeout_s: float | None = None) -> redis.Redis:
    """A client whose replies stay bytes (no decoding): the relay moves frames through as
    they came. `timeout_s` bounds a connect and each reply (None: a connect takes up to
    CONNECT_TIMEOUT_S, a reply as long as it takes)."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=timeout_s or CONNECT_TIMEOUT_S,
        socket_timeout=timeout_s,
    )


def connect_async(settings: Settings) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )


def unavailable(settings: Settings, exc: Exception) -> RedisUnavailable:
    return RedisUnavailable(f"cannot reach Redis at {settings.redacted_redis_url}: {exc}")


@contextmanager
def redis_errors(settings: Settings) -> Iterator[None]:
    """Turn a connection failure into RedisUnavailable; the message never shows a password."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise unavailable(settings, exc) from exc
