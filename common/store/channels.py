"""Pub/sub: the PUBLISH command and subscriptions, with a sync and an async face.

A channel's name is the store module's that owns it (a job's live frames:
`streams.channel`; a batch's endings: `batches.ended_channel`). Subscriptions hand over
messages' payloads only: subscribe confirmations are skipped. redis-py's errors pass through
unchanged (a subscriber decides whether a lost subscription is worth a retry).

- `subscribe`/`asubscribe`: one channel's messages, one at a time, as text.
- `psubscribe`: every message on the channels matching a pattern, as bytes, taken off the
  connection in bulk (genq.common.adapters.redis_replies): the relay's read path.
"""

from __future__ import annotations

import time
from typing import Any

import redis
import redis.asyncio
from redis.client import PubSub

from genq.common.adapters.redis_replies import Replies
from genq.common.store.command import Command

PMESSAGE = b"pmessage"


def _count(replies: list[Any]) -> int:
    return int(replies[0])


def publish(channel: str, message: str | bytes) -> Command[int]:
    """PUBLISH `message`; its value: how many subscribers received it."""
    return Command((("PUBLISH", channel, message),), _count)


class Subscription:
    """The messages of one channel, from when `subscribe` returned (sync face)."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    def message(self, timeout_s: float) -> str | None:
        """The next message's payload, waiting up to `timeout_s`; None when none came."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            message = self._pubsub.get_message(timeout=left)
            if message is not None:
                return str(message["data"])
            if left <= 0:  # a subscribe confirmation, or nothing, within the time
                return None

    def close(self) -> None:
        self._pubsub.close()


def _open(client: redis.Redis, name: str, pattern: bool) -> PubSub:
    """A connection of the client's pool, subscribed to a channel or a pattern."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        if pattern:
            pubsub.psubscribe(name)
        else:
            pubsub.subscribe(name)
    except BaseException:  # not left holding the connection
        pubsub.close()
        raise
    return pubsub


def subscribe(client: redis.Redis, channel: str) -> Subscription:
    """Subscribe to `channel` (a connection of the client's pool, held until `close`)."""
    return Subscription(_open(client, channel, pattern=False))


class AsyncSubscription:
    """The async face of `Subscription`."""

    def __init__(self, pubsub: redis.asyncio.client.PubSub) -> None:
        self._pubsub = pubsub

    async def message(self, timeout_s: float) -> str | None:
        deadline = time.monotonic() + timeout_s
        while True:
            left = max(deadline - time.monotonic(), 0.0)
            message = await self._pubsub.get_message(timeout=left)
            if message is not None:
                return str(message["data"])
            if left <= 0:
                return None

    async def aclose(self) -> None:
        await self._pubsub.aclose()


async def asubscribe(client: redis.asyncio.Redis, channel: str) -> AsyncSubscription:
    """The async face of `subscribe`."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(channel)
    except BaseException:
        await pubsub.aclose()
        raise
    return AsyncSubscription(pubsub)


class PatternMessages:
    """The messages on every channel matching a pattern, read in bulk as bytes (a client
    without decode_responses): the payloads only."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub
        self._replies = Replies(pubsub.connection)  # type: ignore[arg-type]

    def read(self, wait_s: float, limit: int) -> list[bytes]:
        """The payloads that have arrived, at most `limit`, waiting up to `wait_s` for one.
        A lost connection raises redis.ConnectionError."""
        replies = self._replies.available(wait_s, limit)
        # [pmessage, pattern, channel, payload] (hiredis: a list subclass); the rest confirm
        # the psubscribe
        batch = [r[3] for r in replies if isinstance(r, list) and r[0] == PMESSAGE]
        if len(batch) < len(replies):
            for reply in replies:
                if isinstance(reply, Exception):  # no command of ours is answered here
                    raise redis.ConnectionError(str(reply))
        return batch

    def close(self) -> None:
        self._pubsub.close()


def psubscribe(client: redis.Redis, pattern: str) -> PatternMessages:
    """Subscribe to every channel matching `pattern` (a connection of its own until
    `close`)."""
    return PatternMessages(_open(client, pattern, pattern=True))
