"""Worker presence: which workers run now, and which queues they serve.

Each worker's main process records itself (a WorkerInfo; keys and encoding in
common/store/presence.py) with a time to live of a few heartbeat intervals, and its heartbeat
refreshes it; a clean shutdown removes it. So a worker that stops beating (killed, host gone) is
gone once Redis expires its record: no clocks of different machines are compared. A set lists
the names, so that readers need no SCAN; names whose record expired are dropped by readers (a
worker back from a long pause adds itself again at its next heartbeat).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
import redis.asyncio

from genq.common.routing import queue_device, worker_command
from genq.common.schemas import JobRecord, JobState, WorkerInfo
from genq.common.store import arun, presence, run
from genq.common.store.keys import Keys


def live_workers(client: redis.Redis, keys: Keys) -> list[WorkerInfo]:
    """The workers whose records have not expired, by name."""
    found = run(client, presence.names(keys))
    live, gone = run(client, presence.records(keys, found))
    run(client, presence.forget(keys, gone))
    return live


async def live_workers_async(client: redis.asyncio.Redis, keys: Keys) -> list[WorkerInfo]:
    """The async face of `live_workers`."""
    found = await arun(client, presence.names(keys))
    live, gone = await arun(client, presence.records(keys, found))
    await arun(client, presence.forget(keys, gone))
    return live


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
