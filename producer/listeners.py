"""A batch's ended channel, listened to: `Listener` and its async face `AsyncListener`.

The FINISH script publishes each ending job's id on the batch's `...:ended` channel (see
common/store/batches.py). A listener subscribes before the batch is read, so that an ending
between the read and the wait still wakes the wait. If Redis refuses the subscription, or the
connection is lost, waits fall back to the bounded wait alone (an ending meanwhile costs one
full read), never a hang. What a wait heard is kept by the I/O-free `Heard`
(producer/waiting.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Self

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

from genq.producer.waiting import Heard

log = logging.getLogger("genq.client")


class Listener:
    """The announcements of one batch's ended channel, on a sync Redis client."""

    def __init__(self, client: redis.Redis, channel: str, enabled: bool = True) -> None:
        self._client, self._channel, self._enabled = client, channel, enabled
        self._pubsub: redis.client.PubSub | None = None

    def __enter__(self) -> Self:
        if self._enabled:  # a reader that will not wait needs no subscription
            self._subscribe()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pubsub is not None:
            self._pubsub.close()

    def _subscribe(self) -> None:
        try:
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            self._pubsub.subscribe(self._channel)
        except redis.RedisError as exc:  # the caller's next read retries or reports it
            log.debug("no announcements from %s: %s", self._channel, exc)
            self._pubsub = None

    def wait(self, timeout_s: float) -> set[str]:
        """The ids of the jobs announced within `timeout_s` (empty when none was)."""
        if self._pubsub is None:
            return self._resubscribe(timeout_s)
        try:
            return _drain(self._pubsub, timeout_s)
        except redis.RedisError:
            self._pubsub.close()
            self._pubsub = None
            return set()

    def _resubscribe(self, timeout_s: float) -> set[str]:
        """After a lost connection: endings meanwhile went unheard, and need a full read."""
        self._subscribe()
        if self._pubsub is None:
            time.sleep(timeout_s)
        return set()


def _drain(pubsub: redis.client.PubSub, timeout_s: float) -> set[str]:
    heard = Heard(timeout_s)
    while (timeout := heard.timeout()) is not None:
        heard.take(pubsub.get_message(timeout=timeout))
    return heard.job_ids


class AsyncListener:
    """The async face of Listener."""

    def __init__(self, client: redis.asyncio.Redis, channel: str, enabled: bool = True) -> None:
        self._client, self._channel, self._enabled = client, channel, enabled
        self._pubsub: redis.asyncio.client.PubSub | None = None

    async def __aenter__(self) -> Self:
        if self._enabled:
            await self._subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pubsub is not None:
            await self._pubsub.aclose()

    async def _subscribe(self) -> None:
        try:
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(self._channel)
        except redis.RedisError as exc:
            log.debug("no announcements from %s: %s", self._channel, exc)
            self._pubsub = None

    async def wait(self, timeout_s: float) -> set[str]:
        if self._pubsub is None:
            return await self._resubscribe(timeout_s)
        try:
            return await _drain_async(self._pubsub, timeout_s)
        except redis.RedisError:
            await self._pubsub.aclose()
            self._pubsub = None
            return set()

    async def _resubscribe(self, timeout_s: float) -> set[str]:
        await self._subscribe()
        if self._pubsub is None:
            await asyncio.sleep(timeout_s)
        return set()


async def _drain_async(pubsub: redis.asyncio.client.PubSub, timeout_s: float) -> set[str]:
    heard = Heard(timeout_s)
    while (timeout := heard.timeout()) is not None:
        heard.take(await pubsub.get_message(timeout=timeout))
    return heard.job_ids
