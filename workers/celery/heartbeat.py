"""A worker's presence in Redis (see common.presence and common.store.presence): recorded when the
worker is ready, refreshed by a heartbeat thread of its main process, removed on a clean
shutdown."""

from __future__ import annotations

import logging
import threading
import time

import redis

from genq.common.connection import connect
from genq.common.schemas import WorkerInfo
from genq.common.settings import Settings
from genq.common.store import presence, run_transaction
from genq.common.store.keys import Keys

log = logging.getLogger(__name__)
STOP_WAIT_S = 5.0  # longest wait for the thread's last beat at shutdown


class Heartbeat:
    def __init__(self, settings: Settings, info: WorkerInfo) -> None:
        self.info = info
        self._redis = connect(settings)
        self._keys = Keys(settings.key_prefix)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="genq-heartbeat", daemon=True)

    def start(self) -> None:
        self._beat()  # recorded before the worker says it is ready
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and remove the record: the worker is gone at once, not at expiry."""
        self._stopping.set()
        self._thread.join(STOP_WAIT_S)
        try:
            run_transaction(self._redis, [presence.remove(self._keys, self.info.name)])
        except redis.RedisError as exc:
            log.warning(
                "presence: could not remove %s (it expires anyway): %s", self.info.name, exc
            )
        self._redis.close()

    def _run(self) -> None:
        while not self._stopping.wait(self.info.heartbeat_interval_s):
            self._beat()

    def _beat(self) -> None:
        self.info = self.info.model_copy(update={"heartbeat_ms": time.time_ns() // 10**6})
        try:
            # MULTI: the name and its record together
            run_transaction(self._redis, [presence.record(self._keys, self.info)])
        except redis.RedisError as exc:  # redis-py reconnects at the next beat
            log.warning("presence: heartbeat not recorded: %s", exc)
