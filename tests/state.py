"""genq's Redis state as tests read it: through the store's commands (common/store), as the
product does, never by a raw read of a genq key."""

from __future__ import annotations

import redis

from genq.common.frames import Frame, parse_frame
from genq.common.schemas import JobRecord
from genq.common.store import jobs, run, streams
from genq.common.store.keys import Keys


def job_record(client: redis.Redis, keys: Keys, job_id: str) -> JobRecord:
    """A job's record, which must be kept."""
    record = run(client, jobs.read(keys, job_id))
    assert record is not None, f"job {job_id} has no record"
    return record


def stream_frames(client: redis.Redis, keys: Keys, job_id: str) -> list[Frame]:
    """Every frame of a job's stream, in order."""
    return [parse_frame(raw) for _id, raw in run(client, streams.raw_frames(keys, job_id))]


def stream_length(client: redis.Redis, keys: Keys, job_id: str) -> int:
    """How many entries a job's stream holds (0 when it has none)."""
    return run(client, streams.length(keys, job_id))
