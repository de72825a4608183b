"""Hand-off on shutdown: a worker told to stop (SIGTERM, Celery's warm shutdown) gives its
running jobs back at once instead of finishing them or leaving them to the lease reaper, so a
rolling deploy does not wait for long jobs and their readers barely notice.

The worker's main process marks itself draining, in this process (`DRAINING`, which a threads
pool's job threads share) and in Redis (`genq:draining:<node>`, which a prefork pool's child
processes read beside each chunk's cancel check). A job that sees it stops at that chunk
(`HandOff`), and its attempt requeues the job at a new epoch (the store's HANDOFF, fenced by
the attempt's epoch) and sends its task message: another worker resumes it from its last
checkpointed window, as after a crash, with no lease to wait for.
"""

from __future__ import annotations

import logging
import threading

import redis

from genq.common.dispatch import Dispatch, Dispatcher
from genq.common.lifecycle import now_ms
from genq.common.logs import fields
from genq.common.schemas import GenerateRequest
from genq.common.settings import Settings
from genq.common.store import leases, presence, run
from genq.common.store.keys import Keys
from genq.common.store.leases import ReapAction

log = logging.getLogger(__name__)
DRAINING = threading.Event()  # set in a worker process once its shutdown began
DRAIN_MARK_S = 600  # how long the Redis mark outlives a worker that never said it is back


class HandOff(Exception):
    """The worker is shutting down: this attempt stops and gives its job back."""


def start_draining(client: redis.Redis, keys: Keys, node: str) -> None:
    """This worker is shutting down: its jobs, in any process of its pool, hand off."""
    DRAINING.set()
    try:
        run(client, presence.drain(keys, node, DRAIN_MARK_S * 1000))
    except redis.RedisError as exc:  # its threads still see DRAINING; leases cover the rest
        log.warning("could not mark the worker as draining: %s", exc)


def serving(client: redis.Redis, keys: Keys, node: str) -> None:
    """A worker of this name is serving: forget an earlier instance's draining mark."""
    DRAINING.clear()
    run(client, presence.undrain(keys, node))


class HandBack:
    """Requeues handed-off jobs of one worker process."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self._redis, self._keys, self._settings = client, keys, settings
        self._dispatcher: Dispatcher | None = None
        self._lock = threading.Lock()

    def __call__(self, request: GenerateRequest, model: str) -> bool:
        """Requeue the job of this attempt; False when the attempt no longer owned it."""
        grace_ms = int(self._settings.requeue_grace_s * 1000)
        command = leases.hand_off(
            self._keys, request.job_id, request.epoch, request.batch_id, now_ms(), grace_ms
        )
        handed = run(self._redis, command)
        if handed.action is not ReapAction.REQUEUE:
            return False
        again = GenerateRequest(
            job_id=request.job_id, epoch=handed.epoch, batch_id=request.batch_id
        )
        with self._lock:  # job threads share the process's producer
            if self._dispatcher is None:
                self._dispatcher = Dispatcher(self._settings, main="genq-worker")
            self._dispatcher.send([Dispatch(again, handed.queue, handed.priority, model)])
        log.info(
            "job handed off: the worker is shutting down",
            extra=fields(job=request.job_id, epoch=handed.epoch, model=model),
        )
        return True
