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

import contextlib
import logging
import threading
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
    ) -> None:
        self._redis = client
        self._keys = keys
        self._ttl_s = ttl_s
        self.max_delay_s = max_delay_s
        self._endings: list[_Ending] = []
        # Held while endings are taken, and through a flush's round trip: the last flush of a
        # task returns only once a timer's flush has finished too.
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def __len__(self) -> int:
        return len(self._endings)

    def add(
        self, channel: str, frames: list[str], finish: Finish, superseded: Callable[[], None]
    ) -> None:
        """A job's ending; sent at once when it may not wait."""
        with self._lock:
            self._endings.append(_Ending(channel, frames, finish, superseded))
            if self.max_delay_s and self._timer is None:
                self._timer = threading.Timer(self.max_delay_s, self._on_timer)
                self._timer.daemon = True
                self._timer.start()
        if not self.max_delay_s:
            self.flush()

    def attach(self, pipe: Any) -> Settle:
        """Queue the waiting endings first on `pipe`, a round trip about to be made; the
        returned function takes the pipeline's replies once it has run."""
        with self._lock:
            endings = self._take()
        return self._queue(pipe, endings)

    def _take(self) -> list[_Ending]:
        """The waiting endings, now this caller's to send (the lock held)."""
        if self._timer is not None:
            self._timer.cancel()  # a timer already running finds nothing left
            self._timer = None
        endings, self._endings = self._endings, []
        return endings

    def _queue(self, pipe: Any, endings: list[_Ending]) -> Settle:
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
        with self._lock:
            endings = self._take()
            if not endings:
                return
            pipe = self._redis.pipeline(transaction=False)
            settle = self._queue(pipe, endings)
            try:
                replies = pipe.execute()
            except redis.RedisError as exc:
                log.error(
                    "%d finished job(s) could not be recorded: %s; they will be resumed",
                    len(endings),
                    exc,
                )
                raise
        settle(replies)

    def _on_timer(self) -> None:
        # A failure is logged by flush; the reaper resumes those jobs.
        with contextlib.suppress(redis.RedisError):
            self.flush()
