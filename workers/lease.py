"""A running job's lease: renewed from a heartbeat thread while the job runs, so that a long
prompt evaluation does not look like a dead worker, and lost when the job's epoch moves on
(the reaper gave the job to another worker): the attempt then stops publishing."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

import redis

from common.keys import Keys
from common.scripts import RENEW

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This attempt was superseded by a newer epoch; it must stop without writing."""


class Lease:
    def __init__(self, client: redis.Redis, keys: Keys, job_id: str, epoch: int, ttl_s: float):
        self._renew = client.register_script(RENEW)
        self._keys = [keys.job(job_id), keys.leases]
        self.job_id, self.epoch, self.ttl_s = job_id, epoch, ttl_s
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{job_id[:8]}", daemon=True)

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"job {self.job_id}: epoch {self.epoch} was superseded")

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            deadline = time.time_ns() // 1_000_000 + int(self.ttl_s * 1000)
            try:
                renewed = self._renew(keys=self._keys, args=[self.job_id, self.epoch, deadline])
            except redis.RedisError as exc:  # keep trying: the lease has ttl_s to spare
                log.warning("job %s: lease renewal failed: %s", self.job_id, exc)
                continue
            if not renewed:
                log.warning("job %s epoch %d: superseded; stopping", self.job_id, self.epoch)
                self.lost.set()
                return

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
