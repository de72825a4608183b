"""Ending a job: the arguments of the fenced FINISH script, and the end of a job that never
started (cancelled while queued, or expired), which producers, workers and the relay all write.

A job that never started gets a terminal frame like any other, so its readers end: `done`
with finish reason `cancelled` (and the text of any windows an earlier attempt committed), or
`error` with code `expired`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from common.errors import ErrorCode
from common.frames import DoneFrame, ErrorData, ErrorFrame
from common.keys import Keys
from common.schemas import FinishReason, JobRecord, JobResult, JobState, Timings, Usage
from common.scripts import FINISH
from common.store import jobs, run, streams
from common.store.streams import CheckpointEntry


def now_ms() -> int:
    """Wall-clock milliseconds, as genq stores times (its one clock)."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Finish:
    """One FINISH call: the job's final fields and terminal frame, applied only while the job
    is still in `from_state` at `epoch`."""

    job_id: str
    epoch: int
    batch_id: str
    from_state: JobState
    fields: Mapping[str, Any]  # `state` among them
    frame: str
    tokens: int = 0

    def call(self, keys: Keys, ttl_s: int) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of the FINISH script."""
        names = [keys.job(self.job_id), keys.leases, keys.expiries]
        if self.batch_id:
            b = self.batch_id
            names += [keys.batch(b), keys.batch_jobs(b), keys.batch_index(b), keys.batch_ended(b)]
        pairs = [str(part) for name, value in self.fields.items() for part in (name, value)]
        args: list[str | int] = [
            self.job_id,
            self.epoch,
            self.from_state,
            ttl_s,
            keys.tokens(self.job_id),
            self.frame,
            self.tokens,
            now_ms(),
            *pairs,
        ]
        return names, args

    def run(self, client: Any, keys: Keys, ttl_s: int) -> Any:
        """Run it on a client or pipeline; True (or, in a pipeline, a queued 1) when applied."""
        names, args = self.call(keys, ttl_s)
        return client.eval(FINISH, len(names), *names, *args)


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
    return bool(finish.run(client, keys, ttl_s))
