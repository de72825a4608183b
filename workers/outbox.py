"""Finished jobs' last frames and final records, waiting to share a round trip.

A round trip costs more CPU than a short job's own bookkeeping (on the worker, on Redis and on
the relay, which is woken for each), so a bundle's jobs, run for throughput, do not each end
with one. A finished job waits here until the worker's next round trip of any kind takes it
along, or until it has waited `max_delay_s` (the chunk interval: as long as a token may wait),
checked between jobs, or until the task message's jobs are all done. A lone job (no delay) ends
at once. A job that waits here has stopped renewing its lease; if the worker dies meanwhile,
the reaper resumes it from its checkpoint like any other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from common.keys import Keys
from common.lifecycle import Finish

log = logging.getLogger(__name__)

Settle = Callable[[list[Any]], None]


@dataclass(frozen=True)
class _Ending:
    channel: str
    frames: list[str]  # held-back frames, published before the final record
    finish: Finish
    superseded: Callable[[], None]  # called when the final record was not applied


class Outbox:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        ttl_s: int,
        max_delay_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = client
        self._keys = keys
        self._ttl_s = ttl_s
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._endings: list[_Ending] = []
        self._since = 0.0  # when the oldest waiting ending arrived

    def __len__(self) -> int:
        return len(self._endings)

    def add(
        self, channel: str, frames: list[str], finish: Finish, superseded: Callable[[], None]
    ) -> None:
        """A job's ending; sent at once when it may not wait."""
        if not self._endings:
            self._since = self._clock()
        self._endings.append(_Ending(channel, frames, finish, superseded))
        if self.due():
            self.flush()

    def due(self) -> bool:
        return bool(self._endings) and self._clock() - self._since >= self.max_delay_s

    def attach(self, pipe: Any) -> Settle:
        """Queue the waiting endings first on `pipe`, a round trip about to be made; the
        returned function takes the pipeline's replies once it has run."""
        endings, self._endings = self._endings, []
        applied: list[int] = []  # reply index of each ending's FINISH
        for ending in endings:
            for raw in ending.frames:
                pipe.publish(ending.channel, raw)
            ending.finish.run(pipe, self._keys, self._ttl_s)
            applied.append(len(pipe) - 1)

        def settle(replies: list[Any]) -> None:
            for ending, index in zip(endings, applied, strict=True):
                if not replies[index]:
                    ending.superseded()

        return settle

    def flush(self) -> None:
        """Send what waits, in a round trip of its own. When it fails, those jobs are left to
        the reaper (their leases lapse), which resumes them."""
        if not self._endings:
            return
        count = len(self._endings)
        pipe = self._redis.pipeline(transaction=False)
        settle = self.attach(pipe)
        try:
            replies = pipe.execute()
        except redis.RedisError as exc:
            log.error(
                "%d finished job(s) could not be recorded: %s; they will be resumed", count, exc
            )
            raise
        settle(replies)
