"""Worker presence: which workers run now, and which queues they serve.

Each worker's main process records itself (a WorkerInfo) under `Keys.worker(name)` with a
time to live of PRESENCE_MISSED_BEATS heartbeat intervals, and its heartbeat refreshes it; a
clean shutdown removes it. So a worker that stops beating (killed, host gone) is gone once
Redis expires its record: no clocks of different machines are compared. `Keys.workers` lists
the names, so that readers need no SCAN; names whose record expired are dropped by readers (a
worker back from a long pause adds itself again at its next heartbeat).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio

from common.keys import Keys
from common.routing import queue_device, worker_command
from common.schemas import JobRecord, JobState, WorkerInfo

PRESENCE_MISSED_BEATS = 3  # heartbeats a worker may miss before it is considered gone


def record_ops(pipe: Any, keys: Keys, info: WorkerInfo) -> None:
    """Record or refresh a worker (a pipeline of either face)."""
    ttl_ms = max(int(info.heartbeat_interval_s * PRESENCE_MISSED_BEATS * 1000), 1)
    pipe.sadd(keys.workers, info.name)
    pipe.set(keys.worker(info.name), info.model_dump_json(), px=ttl_ms)


def remove_ops(pipe: Any, keys: Keys, name: str) -> None:
    pipe.srem(keys.workers, name)
    pipe.delete(keys.worker(name))


def live_workers(client: redis.Redis, keys: Keys) -> list[WorkerInfo]:
    """The workers whose records have not expired, by name."""
    names = sorted(str(name) for name in client.smembers(keys.workers))
    values = client.mget([keys.worker(name) for name in names]) if names else []
    live, gone = _parse(names, values)
    if gone:
        client.srem(keys.workers, *gone)
    return live


async def live_workers_async(client: redis.asyncio.Redis, keys: Keys) -> list[WorkerInfo]:
    """The async face of `live_workers`."""
    names = sorted(str(name) for name in await client.smembers(keys.workers))
    values = await client.mget([keys.worker(name) for name in names]) if names else []
    live, gone = _parse(names, values)
    if gone:
        await client.srem(keys.workers, *gone)
    return live


def _parse(names: Sequence[str], values: Sequence[Any]) -> tuple[list[WorkerInfo], list[str]]:
    """(live workers, names whose record expired)."""
    live = [WorkerInfo.model_validate_json(v) for v in values if v is not None]
    gone = [name for name, value in zip(names, values, strict=True) if value is None]
    return live, gone


def serving_queue(workers: Sequence[WorkerInfo], queue: str) -> list[WorkerInfo]:
    """The workers that consume `queue`."""
    return [worker for worker in workers if queue in worker.queues]


def waiting_reason(record: JobRecord, workers: Sequence[WorkerInfo]) -> str | None:
    """Why a queued job is not taken, when no live worker serves its queue; else None."""
    if record.state != JobState.QUEUED or serving_queue(workers, record.queue):
        return None
    model = record.spec.model
    return (
        f"no running worker serves model {model} (queue {record.queue}); start one with: "
        f"{worker_command(queue_device(record.queue), model)}"
    )
