"""Riding through a Redis blip: a client's reads retry a lost connection, with backoff, for
GENQ_REDIS_RETRY_S, then raise RedisUnavailable.

Only reads go through here (stream reads, records, batch status and results): repeating one
is harmless, and a stream repeats its read from the last entry it saw, so that nothing is
lost or repeated. `Backoff` holds the timing with no I/O; `retrying` and `retrying_async` are
its sync and async faces.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import redis
import redis.exceptions

from genq.common.connection import unavailable
from genq.common.errors import InvalidEntry
from genq.common.settings import Settings

T = TypeVar("T")
# A lost or refused connection, a timeout, and a restarted Redis still loading its data
# (redis-py's BusyLoadingError is a ConnectionError).
LOST = (redis.ConnectionError, redis.TimeoutError)
# Also ConnectionErrors to redis-py, but permanent: a wrong password stays wrong.
DENIED = (redis.AuthenticationError, redis.exceptions.AuthorizationError)
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 1.0  # a restarted Redis is noticed within a second

log = logging.getLogger("genq.client")


@dataclass
class Backoff:
    """The waits between tries of one read: doubling from FIRST_DELAY_S to MAX_DELAY_S,
    until `budget_s` has passed since the first failure; then None (give up)."""

    budget_s: float
    deadline: float | None = None
    delay_s: float = FIRST_DELAY_S
    failures: int = 0

    def next_delay(self) -> float | None:
        self.failures += 1
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + self.budget_s
        left = self.deadline - now
        if left <= 0:
            return None
        delay, self.delay_s = min(self.delay_s, left), min(self.delay_s * 2, MAX_DELAY_S)
        return delay


def _wait_or_raise(settings: Settings, backoff: Backoff, exc: redis.RedisError) -> float:
    """The wait before the next try of a read that failed with `exc`, or its GenqError:
    RedisUnavailable once the budget is spent (at once when the failure is not a lost
    connection), InvalidEntry when Redis refused the read (a key of the wrong type)."""
    if isinstance(exc, redis.ResponseError):
        raise InvalidEntry(f"Redis refused a read: {exc}") from exc
    delay = backoff.next_delay() if isinstance(exc, LOST) and not isinstance(exc, DENIED) else None
    if delay is None:
        raise unavailable(settings, exc) from exc
    if backoff.failures == 1:  # say it once per read
        log.warning(
            "lost Redis at %s (%s); retrying for up to %gs",
            settings.redacted_redis_url,
            type(exc).__name__,
            settings.redis_retry_s,
        )
    return delay


def retrying(settings: Settings, read: Callable[[], T]) -> T:
    """`read()`, tried again while Redis cannot be reached, for settings.redis_retry_s; its
    failures as GenqErrors."""
    backoff = Backoff(settings.redis_retry_s)
    while True:
        try:
            return read()
        except redis.RedisError as exc:
            time.sleep(_wait_or_raise(settings, backoff, exc))


async def retrying_async(settings: Settings, read: Callable[[], Awaitable[T]]) -> T:
    """The async face of `retrying`."""
    backoff = Backoff(settings.redis_retry_s)
    while True:
        try:
            return await read()
        except redis.RedisError as exc:
            await asyncio.sleep(_wait_or_raise(settings, backoff, exc))
