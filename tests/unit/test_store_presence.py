"""genq.common.store.presence without Redis: the calls its commands make and how they decode."""

from __future__ import annotations

from genq.common.schemas import WorkerInfo
from genq.common.store import presence
from genq.common.store.keys import Keys

KEYS = Keys()


def _info(name: str, interval_s: float = 2.0) -> WorkerInfo:
    return WorkerInfo(
        name=name,
        device="cpu",
        models=["tiny"],
        queues=["cpu.tiny"],
        pid=1,
        started_ms=1,
        heartbeat_ms=1,
        heartbeat_interval_s=interval_s,
    )


def test_a_record_outlives_three_missed_heartbeats() -> None:
    info = _info("w1", interval_s=2.0)
    assert presence.record(KEYS, info).calls == (
        ("SADD", "genq:{workers}", "w1"),
        ("SET", "genq:{workers}:w1", info.model_dump_json(), "PX", 6000),
    )


def test_remove_drops_the_name_and_the_record() -> None:
    assert presence.remove(KEYS, "w1").calls == (
        ("SREM", "genq:{workers}", "w1"),
        ("DEL", "genq:{workers}:w1"),
    )


def test_names_are_sorted() -> None:
    assert presence.names(KEYS).reply([{"b", "a"}]) == ["a", "b"]


def test_records_split_live_workers_from_names_whose_record_expired() -> None:
    command = presence.records(KEYS, ["a", "b"])
    assert command.calls == (("MGET", "genq:{workers}:a", "genq:{workers}:b"),)
    assert command.reply([[None, _info("b").model_dump_json()]]) == ([_info("b")], ["a"])


def test_no_names_read_no_records() -> None:
    assert presence.records(KEYS, []).reply([0]) == ([], [])


def test_forgetting_nothing_makes_no_call() -> None:
    assert presence.forget(KEYS, []).calls == ()
    assert presence.forget(KEYS, ["a"]).calls == (("SREM", "genq:{workers}", "a"),)
