"""Task messages a worker took when Redis was lost under them, sent again once it is back.

Why: kombu's Redis transport takes a task message with one command (BRPOP) and records it as
unacknowledged with a second. When Redis's primary dies between them and a replica is
promoted (Sentinel), the replica can hold the first write and not the second: the message is
gone from the broker, and when this worker's claim of the job was lost too, the job's record
says `queued` with no message left to run it. Its worker still holds the request: once Redis
answers again, a job whose record is `queued` at the message's epoch is dispatched again.

A duplicate message is harmless (the message was not lost after all, or was restored): the
claim runs a job once, and a message of a job that is running or ended is dropped. A job this
worker's claim did reach is `running` in its record: its lease lapses and the relay resumes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import redis

from genq.common.dispatch import Dispatch, Dispatcher
from genq.common.logs import fields
from genq.common.schemas import GenerateRequest, JobRecord, JobState
from genq.common.settings import Settings
from genq.common.store import fair, jobs, run
from genq.common.store.keys import Keys

log = logging.getLogger(__name__)
RETRY_S = 1.0  # between attempts to reach Redis again
WITHIN_S = 300.0  # how long a worker keeps trying; a Redis away longer is an outage


class TakeBack:
    """Sends again the task messages of one worker process that Redis lost."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings) -> None:
        self._redis, self._keys, self._settings = client, keys, settings
        self._dispatcher: Dispatcher | None = None
        self._lock = threading.Lock()

    def resend_later(self, requests: Sequence[GenerateRequest]) -> None:
        """In a thread: once Redis answers, send again those of `requests` still queued."""
        thread = threading.Thread(
            target=self._until_back, args=(list(requests),), name="genq-takeback", daemon=True
        )
        thread.start()

    def _until_back(self, requests: list[GenerateRequest]) -> None:
        deadline = time.monotonic() + WITHIN_S
        while time.monotonic() < deadline:
            try:
                self.resend(requests)
                return
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(RETRY_S)
        log.warning("gave up sending %d task messages again: Redis stayed away", len(requests))

    def resend(self, requests: Sequence[GenerateRequest]) -> int:
        """Dispatch again each request whose job is queued at its epoch; -> how many."""
        records = run(self._redis, jobs.read_many(self._keys, [r.job_id for r in requests]))
        lost = [
            (request, record)
            for request, record in zip(requests, records, strict=True)
            if record is not None and self._lost(request, record)
        ]
        if lost:
            with self._lock:  # job threads share the process's producer
                if self._dispatcher is None:
                    self._dispatcher = Dispatcher(self._settings, main="genq-worker")
                self._dispatcher.send(
                    [
                        Dispatch(rq, rc.queue, rc.priority, rc.spec.model, rc.tenant)
                        for rq, rc in lost
                    ]
                )
            for request, _ in lost:
                log.warning(
                    "job sent again: its task message was taken when Redis was lost",
                    extra=fields(job=request.job_id, epoch=request.epoch),
                )
        return len(lost)

    def _lost(self, request: GenerateRequest, record: JobRecord) -> bool:
        """Whether to send the message again: its job is still queued at its epoch, or, with
        the fair share, it is a ticket (epoch 0) and jobs wait in its queue: another ticket
        may have run its own job, and its claim may have been lost. A spare ticket claims
        nothing; a ticket too few would leave a waiting job without one."""
        if record.state == JobState.QUEUED and record.epoch == request.epoch:
            return True
        if not (self._settings.fair_share and request.epoch == 0):
            return False
        return run(self._redis, fair.waiting_tenants(self._keys, record.queue)) > 0
