"""The relay's Prometheus metrics: frames moved and frames dropped (by reason), how far behind
the workers it runs, what the reaper did, and how many task messages wait in each model's
queue.

The relay is one process: its figures are plain numbers its loop keeps (RelayStats), read by
a collector at scrape time, in a registry of its own. No prometheus_client value objects are
made, so a PROMETHEUS_MULTIPROC_DIR the relay inherits (from a worker's environment, say)
changes nothing.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import redis
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from genq.common.connection import connect_bytes
from genq.common.errors import RegistryError
from genq.common.registry import ModelRegistry
from genq.common.routing import queue_name
from genq.common.settings import Settings
from genq.common.store import fair, run
from genq.common.store import queues as queue_store
from genq.common.store.keys import Keys
from genq.workers.publishing.metrics import Endpoint, serve

log = logging.getLogger("genq.relay")

MARK_EVERY_S = 1.0
RATE_MARKS = 6  # frames per second over the last five to six seconds
SCRAPE_TIMEOUT_S = 2.0  # a scrape with Redis unreachable answers within this


class Drop(StrEnum):
    """Why the relay dropped a message instead of moving it (the metric's `reason` label)."""

    JSON = "json"  # not JSON at all
    SCHEMA = "schema"  # JSON, but not a valid frame: its header or its data
    SEQ = "seq"  # seq 0 on a frame that is not a window sent again for the checkpoint
    NO_JOB = "no_job"  # a valid frame of a job that has no record


class RelayStats:
    """What the relay's loop counts (its only writer), for the scrape thread to read."""

    def __init__(self) -> None:
        self.lag_s = 0.0
        self.dropped: collections.Counter[Drop] = collections.Counter()
        self.requeues: collections.Counter[tuple[str, str]] = collections.Counter()
        self.failed = 0
        self.expired = 0
        self._marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=RATE_MARKS)

    def wrote(self, first_ts_ms: int) -> None:
        """A batch went into the streams: its first frame, the oldest, published at
        `first_ts_ms`, says how far behind its worker the relay is."""
        self.lag_s = max(time.time_ns() // 1_000_000 - first_ts_ms, 0) / 1000

    def idle(self) -> None:
        """Nothing arrived while the relay waited: it is caught up."""
        self.lag_s = 0.0

    def tick(self, now: float, moved: int) -> None:
        """Called every turn of the loop; keeps one mark a second for the frame rate."""
        if not self._marks or now - self._marks[-1][0] >= MARK_EVERY_S:
            self._marks.append((now, moved))

    def rate(self, now: float, moved: int) -> float:
        """Frames per second since the oldest mark (five to six seconds ago)."""
        if not self._marks:
            return 0.0
        then, before = self._marks[0]
        return (moved - before) / (now - then) if now > then else 0.0


@dataclass(frozen=True)
class ModelQueue:
    model: str
    device: str
    queue: str


def model_queues(registry: ModelRegistry) -> list[ModelQueue]:
    return [
        ModelQueue(name, config.device, queue_name(config.device, name))
        for name, config in registry.models.items()
    ]


def queue_depths(client: redis.Redis, queues: Sequence[str]) -> list[int]:
    """Task messages waiting in each queue (one Redis list per priority step), in one round
    trip. Messages a worker has taken (unacked) are not waiting."""
    return run(client, queue_store.depths(list(queues)))


class RelayCounts(Protocol):
    """What the metrics read of the relay (`workers.relay.service.Relay`), named here so that the
    metrics do not import the relay, which imports them."""

    @property
    def moved(self) -> int:
        """Frames moved into the streams so far."""
        ...

    @property
    def stats(self) -> RelayStats: ...


class RelayCollector(Collector):
    def __init__(
        self,
        relay: RelayCounts,
        queues: Sequence[ModelQueue],
        client: redis.Redis,
        keys: Keys | None = None,
    ) -> None:
        self._keys = keys or Keys()
        self._relay = relay
        self._queues = tuple(queues)
        self._redis = client
        self._redis_up = True

    def collect(self) -> Iterator[Metric]:
        relay, stats = self._relay, self._relay.stats
        moved = relay.moved
        yield CounterMetricFamily(
            "genq_relay_frames", "Frames moved from the token channels into streams.", moved
        )
        yield self._dropped(stats)
        yield GaugeMetricFamily(
            "genq_relay_frames_per_second",
            "Frames moved per second over the last five seconds or so.",
            stats.rate(time.monotonic(), moved),
        )
        yield GaugeMetricFamily(
            "genq_relay_lag_seconds",
            "How long the oldest frame of the last batch moved had waited since its worker "
            "sent it (wall clocks of two hosts: their skew included); 0 when caught up.",
            stats.lag_s,
        )
        yield self._requeues(stats)
        yield CounterMetricFamily(
            "genq_relay_failed_jobs",
            "Jobs failed by the reaper: their worker died and their attempts were spent.",
            stats.failed,
        )
        yield CounterMetricFamily(
            "genq_relay_expired_jobs",
            "Queued jobs ended by the relay because their expiry time passed.",
            stats.expired,
        )
        yield from self._queue_depth()

    def _tenants(self) -> Iterable[Metric]:
        """Each tenant's waiting jobs and virtual counter, per model queue (the fair share:
        common/store/fair.py), when Redis answers."""
        queued = GaugeMetricFamily(
            "genq_tenant_queued",
            "Jobs of a tenant waiting in a model's fair-share queue (read at scrape time).",
            labels=("queue", "model", "tenant"),
        )
        counter = GaugeMetricFamily(
            "genq_tenant_virtual_tokens",
            "A tenant's virtual token counter in a model's queue: weighted tokens served over "
            "its weight (VTC); the fair share serves the least one first.",
            labels=("queue", "model", "tenant"),
        )
        try:
            for q in self._queues if self._redis_up else ():
                for tenant, (count, vtc) in run(
                    self._redis, fair.tenants(self._keys, q.queue)
                ).items():
                    queued.add_metric([q.queue, q.model, tenant], count)
                    counter.add_metric([q.queue, q.model, tenant], vtc)
        except redis.RedisError as exc:
            log.warning("relay: metrics: cannot read the tenants' queues: %s", exc)
        yield queued
        yield counter

    @staticmethod
    def _dropped(stats: RelayStats) -> Metric:
        family = CounterMetricFamily(
            "genq_relay_dropped_frames",
            "Messages on the token channels dropped instead of moved: not JSON (json), not a "
            "valid frame (schema), seq 0 outside a checkpoint-only window (seq), or a frame of "
            "a job that has no record (no_job).",
            labels=("reason",),
        )
        counts = dict(stats.dropped)  # a copy: the relay's loop may add a key
        for reason in Drop:
            family.add_metric([reason.value], counts.get(reason, 0))
        return family

    def _requeues(self, stats: RelayStats) -> Metric:
        family = CounterMetricFamily(
            "genq_relay_requeues",
            "Jobs re-enqueued by the reaper after their lease lapsed (their worker died).",
            labels=("model", "device"),
        )
        counts = dict.fromkeys(((q.model, q.device) for q in self._queues), 0)
        counts.update(dict(stats.requeues))  # a copy: the relay's loop may add a key
        for (model, device), count in sorted(counts.items()):
            family.add_metric([model, device], count)
        return family

    def _queue_depth(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily(
            "genq_queue_depth",
            "Task messages waiting in a model's queue, all priorities (read from Redis at "
            "scrape time; absent when Redis could not be read).",
            labels=("queue", "model", "device"),
        )
        try:
            counts = queue_depths(self._redis, [q.queue for q in self._queues])
        except redis.RedisError as exc:
            if self._redis_up:
                log.warning("relay: metrics: cannot read queue depths: %s", exc)
            self._redis_up = False
        else:
            self._redis_up = True
            for q, count in zip(self._queues, counts, strict=True):
                depth.add_metric([q.queue, q.model, q.device], count)
        yield depth
        yield from self._tenants()
        yield GaugeMetricFamily(
            "genq_relay_redis_up",
            "1 when this scrape could read the queue depths from Redis, else 0.",
            int(self._redis_up),
        )


def registry_queues(settings: Settings) -> list[ModelQueue]:
    """The queues of every model of the registry; none when it cannot be read (the relay
    runs on: it does not need the registry to move frames)."""
    try:
        return model_queues(ModelRegistry.from_settings(settings))
    except RegistryError as exc:
        log.warning("relay: metrics: no queue depths: %s", exc)
        return []


def serve_relay(relay: RelayCounts, settings: Settings) -> Endpoint | None:
    """The relay's endpoint on GENQ_RELAY_METRICS_PORT; None when that is 0 or in use."""
    if not settings.relay_metrics_port:
        return None
    client = connect_bytes(settings, SCRAPE_TIMEOUT_S)
    registry = CollectorRegistry(auto_describe=False)
    keys = Keys(settings.key_prefix)
    registry.register(RelayCollector(relay, registry_queues(settings), client, keys))
    ProcessCollector(registry=registry)  # the relay's CPU and memory
    host, port = settings.metrics_host, settings.relay_metrics_port
    return serve(registry, host, port, "GENQ_RELAY_METRICS_PORT")
