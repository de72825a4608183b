"""Worker presence: the set `genq:{workers}` of worker names and, per worker, the string
`genq:{workers}:<name>` holding its WorkerInfo as JSON (versioned by WorkerInfo's own `v`), with
a time to live of PRESENCE_MISSED_BEATS heartbeat intervals. The keys share one hash tag, so
that one MGET reads every record. What presence means (who serves a queue, why a job waits) is
in common/presence.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genq.common.schemas import WorkerInfo
from genq.common.store.command import Command
from genq.common.store.keys import Keys

PRESENCE_MISSED_BEATS = 3  # heartbeats a worker may miss before it is considered gone


def workers_key(keys: Keys) -> str:
    return f"{keys.prefix}:{{workers}}"


def worker_key(keys: Keys, name: str) -> str:
    return f"{keys.prefix}:{{workers}}:{name}"


def draining_key(keys: Keys, name: str) -> str:
    """Set while the worker shuts down: its jobs hand themselves off (workers/celery/handoff)."""
    return f"{keys.prefix}:draining:{name}"


def _none(replies: list[Any]) -> None:
    return None


def ttl_ms(info: WorkerInfo) -> int:
    """How long a record outlives the worker's last heartbeat."""
    return max(int(info.heartbeat_interval_s * PRESENCE_MISSED_BEATS * 1000), 1)


def record(keys: Keys, info: WorkerInfo) -> Command[None]:
    """Record or refresh a worker (in a MULTI pipeline: the name and its record together)."""
    calls = (
        ("SADD", workers_key(keys), info.name),
        ("SET", worker_key(keys, info.name), info.model_dump_json(), "PX", ttl_ms(info)),
    )
    return Command(calls, _none)


def remove(keys: Keys, name: str) -> Command[None]:
    return Command((("SREM", workers_key(keys), name), ("DEL", worker_key(keys, name))), _none)


def names(keys: Keys) -> Command[list[str]]:
    """The names of the workers that recorded themselves, sorted (some may have expired)."""
    return Command((("SMEMBERS", workers_key(keys)),), lambda r: sorted(str(n) for n in r[0]))


Found = tuple[list[WorkerInfo], list[str]]  # (live workers, names whose record expired)


def records(keys: Keys, worker_names: Sequence[str]) -> Command[Found]:
    """The named workers' records: those live, and the names whose record expired."""
    listed = list(worker_names)

    def decode(replies: list[Any]) -> Found:
        values = replies[0] if listed else []
        live = [WorkerInfo.model_validate_json(v) for v in values if v is not None]
        gone = [name for name, value in zip(listed, values, strict=True) if value is None]
        return live, gone

    # MGET needs a key: with no names, an EXISTS of the set stands in (its reply is unused).
    call = (
        ("MGET", *(worker_key(keys, n) for n in listed))
        if listed
        else ("EXISTS", workers_key(keys))
    )
    return Command((call,), decode)


def forget(keys: Keys, gone: Sequence[str]) -> Command[None]:
    """Drop names whose record expired (a worker back from a long pause adds itself again)."""
    return Command((("SREM", workers_key(keys), *gone),) if gone else (), _none)


def drain(keys: Keys, name: str, ttl_ms: int) -> Command[None]:
    """Mark a worker as shutting down, for its job processes to see (workers.celery.handoff)."""
    return Command((("SET", draining_key(keys, name), "1", "PX", ttl_ms),), _none)


def undrain(keys: Keys, name: str) -> Command[None]:
    """A worker of that name is serving (again): its jobs run."""
    return Command((("DEL", draining_key(keys, name)),), _none)


def draining(keys: Keys, name: str) -> Command[bool]:
    """Whether the worker is shutting down (queued beside a job's cancel check)."""
    return Command((("EXISTS", draining_key(keys, name)),), lambda replies: bool(replies[0]))
