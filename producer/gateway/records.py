"""`Records`: the gateway's own state in Redis (common/store's `gateway`, `files` and
`openai_batches` modules), on a connection of its own, behind one boundary: any Redis failure
becomes RedisUnavailable (OpenAI's 503), with the URL's password masked."""

from __future__ import annotations

from typing import TypeVar

import redis

from genq.common.connection import connect_async, unavailable
from genq.common.errors import RedisUnavailable
from genq.common.settings import Settings
from genq.common.store import Command, arun
from genq.common.store.keys import Keys

T = TypeVar("T")


class Records:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._redis = connect_async(settings)

    async def run(self, command: Command[T]) -> T:
        """Run a store command; RedisUnavailable for any failure of Redis."""
        try:
            return await arun(self._redis, command)
        except redis.RedisError as exc:
            raise self.failure(exc) from exc

    def failure(self, exc: redis.RedisError) -> RedisUnavailable:
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            return unavailable(self.settings, exc)
        where = self.settings.redacted_redis_url
        return RedisUnavailable(f"Redis at {where} refused the gateway's command: {exc}")

    async def aclose(self) -> None:
        await self._redis.aclose()
