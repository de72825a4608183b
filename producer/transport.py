"""How a client face runs the store's commands (which do no I/O, see common/store/command.py):
`Transport` on a sync Redis client, `AsyncTransport` on an async one. The handles, streams
and clients say which command to run and what to do with its answer; only here do they differ
by `await`, as httpx's clients differ only by their transport.

    read   a read: a lost connection is retried for GENQ_REDIS_RETRY_S (see producer/retry.py)
    call   a write, or a read that must not wait: once, its failure as RedisUnavailable
    call_all  several such, in one pipeline
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, TypeVar

import redis
import redis.asyncio

from genq.common.connection import redis_errors
from genq.common.settings import Settings
from genq.common.store import Command, arun, arun_all, run, run_all
from genq.producer.retry import retrying, retrying_async

T = TypeVar("T")


class Transport:
    """Runs commands on a sync Redis client."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis, self.settings = client, settings

    def read(self, command: Command[T]) -> T:
        return retrying(self.settings, partial(run, self.redis, command))

    def call(self, command: Command[T]) -> T:
        with redis_errors(self.settings):
            return run(self.redis, command)

    def call_all(self, commands: Sequence[Command[Any]]) -> list[Any]:
        with redis_errors(self.settings):
            return run_all(self.redis, commands)


class AsyncTransport:
    """Runs commands on an async Redis client."""

    def __init__(self, client: redis.asyncio.Redis, settings: Settings) -> None:
        self.redis, self.settings = client, settings

    async def read(self, command: Command[T]) -> T:
        return await retrying_async(self.settings, partial(arun, self.redis, command))

    async def call(self, command: Command[T]) -> T:
        with redis_errors(self.settings):
            return await arun(self.redis, command)

    async def call_all(self, commands: Sequence[Command[Any]]) -> list[Any]:
        with redis_errors(self.settings):
            return await arun_all(self.redis, commands)
