"""genq.workers.relay.metrics: the relay's figures, and queue depths read over kombu's priority
lists."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from genq.common.celery_config import BROKER_PRIORITY_STEPS, priority_lists
from genq.common.frames import TokenData, TokenFrame
from genq.common.registry import ModelRegistry
from genq.common.settings import Settings
from genq.common.store import queues
from genq.workers.relay.metrics import (
    Drop,
    ModelQueue,
    RelayCollector,
    RelayStats,
    model_queues,
)
from genq.workers.relay.service import Relay
from ops.localstack import free_port

# kombu's naming of the priority lists: tests/unit/test_adapters.py.


def test_depth_sums_each_queues_priority_lists() -> None:
    one = queues.depth("cpu.tiny")
    assert len(one.calls) == len(BROKER_PRIORITY_STEPS)
    assert one.decode([1, 0, 2, 0, 0, 5, 3, 0, 0, 0]) == 11
    two = queues.depths(["cpu.a", "cpu.b"])
    lists = [call[1] for call in two.calls]
    assert lists == [*priority_lists("cpu.a"), *priority_lists("cpu.b")]
    assert two.decode([1] * 10 + [2] * 10) == [10, 20]
    assert queues.depths([]).decode([]) == []


def test_every_registry_model_has_its_queue() -> None:
    registry = ModelRegistry.from_settings(Settings())
    assert ModelQueue("tiny", "cpu", "cpu.tiny") in model_queues(registry)


def test_lag_is_the_age_of_a_batchs_first_frame() -> None:
    stats = RelayStats()
    data = TokenData(text="x", token_ids=[1])
    now_ms = time.time_ns() // 1_000_000
    old = TokenFrame(job_id="a" * 32, epoch=0, seq=1, ts_ms=now_ms - 1500, data=data)
    new = TokenFrame(job_id="a" * 32, epoch=0, seq=2, ts_ms=now_ms, data=data)
    stats.wrote(min(old.ts_ms, new.ts_ms))  # the relay's oldest frame of the batch
    assert 1.5 <= stats.lag_s < 2.5
    stats.idle()
    assert stats.lag_s == 0


def test_frame_rate_is_over_the_last_seconds() -> None:
    stats = RelayStats()
    assert stats.rate(100.0, 0) == 0
    for second in range(10):  # 1,000 frames a second, then none
        stats.tick(100.0 + second, 1000 * second)
        stats.tick(100.5 + second, 1000 * second + 500)  # within the second: no mark
    assert stats.rate(109.0, 9000) == pytest.approx(1000)
    assert stats.rate(115.0, 9000) == pytest.approx(5000 / 11)  # no turns since: it decays


def unreachable_relay() -> Relay:
    """A relay that never connects: its Redis port has nothing listening."""
    return Relay(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))


def test_a_scrape_with_redis_down_answers_without_depths(
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = unreachable_relay()
    relay.moved = 42
    relay.stats.requeues["tiny", "cpu"] += 2
    queues = [ModelQueue("tiny", "cpu", "cpu.tiny"), ModelQueue("big", "gpu", "gpu.big")]
    registry = CollectorRegistry()
    registry.register(RelayCollector(relay, queues, relay.redis))
    with caplog.at_level(logging.WARNING, logger="genq.relay"):
        for _ in range(2):
            assert registry.get_sample_value("genq_relay_redis_up") == 0
            assert registry.get_sample_value("genq_relay_frames_total") == 42
    depths = [s for f in registry.collect() if f.name == "genq_queue_depth" for s in f.samples]
    assert depths == []
    warnings = [r for r in caplog.records if "queue depths" in r.getMessage()]
    assert len(warnings) == 1  # once an outage, not once a scrape
    requeues = {
        (labels["model"], labels["device"]): value
        for labels, value in (
            (s.labels, s.value)
            for f in registry.collect()
            if f.name == "genq_relay_requeues"
            for s in f.samples
        )
    }
    assert requeues == {("tiny", "cpu"): 2, ("big", "gpu"): 0}


def test_dropped_frames_are_counted_by_reason_every_reason_shown() -> None:
    relay = unreachable_relay()
    relay.stats.dropped[Drop.SCHEMA] += 3
    registry = CollectorRegistry()
    registry.register(RelayCollector(relay, [], relay.redis))
    dropped = {
        reason.value: registry.get_sample_value(
            "genq_relay_dropped_frames_total", {"reason": reason.value}
        )
        for reason in Drop
    }
    assert dropped == {"json": 0, "schema": 3, "seq": 0, "no_job": 0}
