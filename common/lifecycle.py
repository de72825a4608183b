"""Ending a job: the fenced FINISH command, and the end of a job that never
started (cancelled while queued, or expired), which producers, workers and the relay all write.

A job that never started gets a terminal frame like any other, so its readers end: `done`
with finish reason `cancelled` (and the text of any windows an earlier attempt committed), or
`error` with code `expired`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

from genq.common.errors import ErrorCode
from genq.common.frames import DoneFrame, ErrorData, ErrorFrame
from genq.common.schemas import FinishReason, JobRecord, JobResult, JobState, Timings, Usage
from genq.common.store import Command, jobs, leases, run, streams
from genq.common.store.keys import Keys
from genq.common.store.streams import CheckpointEntry


def now_ms() -> int:
    """Wall-clock milliseconds, as genq stores times (its one clock)."""
    return time.time_ns() // 1_000_000


class Finish(leases.Ending):
    """One FINISH call (common/store/leases.py): the job's final fields and terminal frame,
    applied only while the job is still in `from_state` at `epoch`."""

    def command(self, keys: Keys, ttl_s: int) -> Command[bool]:
        """The FINISH command, stamped now; True when applied (run it beside others with
        `genq.common.store.run_all`)."""
        return leases.finish(keys, self, ttl_s, now_ms())

    def run(self, client: redis.Redis, keys: Keys, ttl_s: int) -> bool:
        return run(client, self.command(keys, ttl_s))


def unstarted_finish(
    job_id: str, record: JobRecord, state: JobState, committed: Sequence[CheckpointEntry]
) -> Finish:
    """The end of a queued job that will not start: `cancelled` or `expired`. `committed`
    holds the checkpoint entries an earlier attempt wrote (empty for a job never started)."""
    finished = now_ms()
    base = {"state": state, "finished_ms": finished}
    if state is JobState.EXPIRED:
        message = "the job was not started before its expiry time"
        data = ErrorData(code=ErrorCode.EXPIRED, message=message, retryable=False)
        frame = ErrorFrame(job_id=job_id, epoch=record.epoch, seq=1, data=data)
        fields = {**base, "error": message, "error_code": ErrorCode.EXPIRED}
        return Finish(job_id, record.epoch, record.batch_id, JobState.QUEUED, fields, _json(frame))
    tokens = sum(window.count for window in committed)
    result = JobResult(
        job_id=job_id,
        model=record.spec.model,
        text="".join(window.text for window in committed),
        finish_reason=FinishReason.CANCELLED,
        usage=Usage(prompt_tokens=0, completion_tokens=tokens),
        timings=Timings(
            queue_wait_ms=max(finished - record.submitted_ms, 0),
            first_token_ms=0,
            generation_ms=0,
            tokens_per_s=0.0,
        ),
    )
    done = DoneFrame(job_id=job_id, epoch=record.epoch, seq=1, data=result)
    fields = {**base, "result": result.model_dump_json()}
    return Finish(
        job_id, record.epoch, record.batch_id, JobState.QUEUED, fields, _json(done), tokens
    )


def _json(frame: DoneFrame | ErrorFrame) -> str:
    return frame.model_dump_json()


def end_unstarted(
    client: redis.Redis, keys: Keys, ttl_s: int, job_id: str, state: JobState
) -> bool:
    """End a queued job as `cancelled` or `expired`; False when it is not queued any more (a
    worker took it, or it ended)."""
    record = run(client, jobs.read(keys, job_id))
    if record is None or record.state != JobState.QUEUED:
        return False
    committed = run(client, streams.entries(keys, job_id)) if record.epoch else []
    finish = unstarted_finish(job_id, record, state, committed)
    return finish.run(client, keys, ttl_s)
