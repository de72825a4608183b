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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from genq.common.lifecycle import Finish
from genq.common.store import Command, channels, run_all
from genq.common.store.keys import Keys

log = logging.getLogger(__name__)

Settle = Callable[[list[Any]], None]


@dataclass(frozen=True)
class _Ending:
    channel: str
    frames: list[str]  # held-back frames, published before the final record
    finish: Finish
    superseded: Callable[[], None]  # called when the final record was not applied


class Outbox:
    """One per worker process, for its life: its flusher thread is started once (on this VM a
    thread start costs about 0.5 ms of CPU, as much as a short job's bookkeeping)."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self._redis = client
        self._keys = keys
        self._ttl_s = ttl_s
        self.max_delay_s = 0.0  # set per task message: 0 for a lone job, which ends at once
        self._endings: list[_Ending] = []
        self._deadline: float | None = None  # when the oldest waiting ending must be sent
        self._cond = threading.Condition()
        # Held through a flush's round trip: a task's last flush returns only once the
        # flusher thread's flush in progress has finished too.
        self._sending = threading.Lock()
        self._flusher: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._endings)

    def add(
        self, channel: str, frames: list[str], finish: Finish, superseded: Callable[[], None]
    ) -> None:
        """A job's ending; sent at once when it may not wait."""
        with self._cond:
            self._endings.append(_Ending(channel, frames, finish, superseded))
            if self.max_delay_s and self._deadline is None:
                self._deadline = time.monotonic() + self.max_delay_s
                self._start_flusher()
                self._cond.notify()
        if not self.max_delay_s:
            self.flush()

    def attach(self, commands: list[Command[Any]]) -> Settle:
        """Add the waiting endings' commands to `commands`, a round trip about to be made
        (`run_all`); the returned function takes its values once it has run."""
        with self._cond:
            endings = self._take()
        return self._queue(commands, endings)

    def flush(self) -> None:
        """Send what waits, in a round trip of its own. When it fails, those jobs are left to
        the reaper (their leases lapse), which resumes them."""
        with self._sending:
            with self._cond:
                endings = self._take()
            if not endings:
                return
            commands: list[Command[Any]] = []
            settle = self._queue(commands, endings)
            try:
                values = run_all(self._redis, commands)
            except redis.RedisError as exc:
                log.error(
                    "%d finished job(s) could not be recorded: %s; they will be resumed",
                    len(endings),
                    exc,
                )
                raise
        settle(values)

    def _take(self) -> list[_Ending]:
        """The waiting endings, now the caller's to send (with the condition's lock held)."""
        self._deadline = None
        endings, self._endings = self._endings, []
        return endings

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_when_due, daemon=True)
            self._flusher.name = "genq-outbox"
            self._flusher.start()

    def _flush_when_due(self) -> None:
        while True:
            with self._cond:
                wait = self._due_in()
                while wait is None or wait > 0:
                    self._cond.wait(wait)
                    wait = self._due_in()
            # A failure is logged by flush; the reaper resumes those jobs.
            with contextlib.suppress(redis.RedisError):
                self.flush()

    def _due_in(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _queue(self, commands: list[Command[Any]], endings: list[_Ending]) -> Settle:
        applied: list[int] = []  # index of each ending's FINISH among the commands
        for ending in endings:
            commands += [channels.publish(ending.channel, raw) for raw in ending.frames]
            commands.append(ending.finish.command(self._keys, self._ttl_s))
            applied.append(len(commands) - 1)

        def settle(values: list[Any]) -> None:
            for ending, index in zip(endings, applied, strict=True):
                if not values[index]:
                    ending.superseded()

        return settle
