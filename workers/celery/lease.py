"""Running jobs' leases: renewed from one heartbeat thread while a task message's jobs run, so
that a long prompt evaluation does not look like a dead worker, and lost when a job's epoch
moves on (the reaper gave the job to another worker): that attempt then stops publishing.

A bundle's jobs are all claimed when its message arrives, so the ones still waiting their
turn are renewed too; a job leaves the renewal when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

import redis

from genq.common.store import leases, run
from genq.common.store.keys import Keys

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This attempt was superseded by a newer epoch; it must stop without writing."""


class Lease:
    """One job attempt's view of the shared leases."""

    def __init__(self, leases: Leases, job_id: str, epoch: int) -> None:
        self._leases = leases
        self.job_id, self.epoch = job_id, epoch

    def check(self) -> None:
        if self.job_id in self._leases.lost:
            raise LeaseLost(f"job {self.job_id}: epoch {self.epoch} was superseded")


class Leases:
    def __init__(self, client: redis.Redis, keys: Keys, jobs: dict[str, int], ttl_s: float) -> None:
        self._client = client
        self._keys = keys
        self._epochs = dict(jobs)  # job id -> the epoch this worker claimed
        self._jobs = dict(jobs)  # the same, while the job runs or waits its turn
        self._lock = threading.Lock()
        self.ttl_s = ttl_s
        self.lost: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="genq-lease", daemon=True)

    def lease(self, job_id: str) -> Lease:
        return Lease(self, job_id, self._epochs[job_id])

    def release(self, job_id: str) -> None:
        """The job ended (or was given up): stop renewing its lease."""
        with self._lock:
            self._jobs.pop(job_id, None)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            with self._lock:
                jobs = list(self._jobs.items())
            if not jobs:
                continue
            deadline = time.time_ns() // 1_000_000 + int(self.ttl_s * 1000)
            try:
                renewed = run(self._client, leases.renew(self._keys, jobs, deadline))
            except redis.RedisError as exc:  # keep trying: the leases have ttl_s to spare
                log.warning("lease renewal failed: %s", exc)
                continue
            for (job_id, epoch), ok in zip(jobs, renewed, strict=True):
                if not ok:
                    self._supersede(job_id, epoch)

    def _supersede(self, job_id: str, epoch: int) -> None:
        with self._lock:
            if self._jobs.pop(job_id, None) is None:
                return  # it ended meanwhile: its own FINISH moved it on
        log.warning("job %s epoch %d: superseded; stopping", job_id, epoch)
        self.lost.add(job_id)

    def __enter__(self) -> Leases:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
