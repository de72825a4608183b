"""Running one job attempt: claim it (an epoch, a lease), resume from its checkpoint when it
is not the first attempt, generate, and end it with a `done` or `error` frame published
together with the job's final record, unless a newer attempt has taken the job over."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import redis

from common.connection import connect
from common.errors import GenerationError, GenqError
from common.frames import ResumeData
from common.keys import Keys
from common.lifecycle import Finish, end_unstarted
from common.registry import ModelRegistry
from common.schemas import (
    FinishReason,
    GenerateRequest,
    JobRecord,
    JobResult,
    JobState,
    Timings,
    Usage,
)
from common.scripts import CLAIM
from common.settings import Settings
from workers.chunks import Chunker
from workers.generation import Committed, Generated, generate
from workers.lease import Lease, LeaseLost
from workers.models import ModelCache
from workers.publisher import FramePublisher, now_ms

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What one worker process keeps between jobs: settings, Redis, loaded models."""

    settings: Settings
    redis: redis.Redis
    keys: Keys
    models: ModelCache

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        registry = ModelRegistry.from_settings(settings)
        return cls(settings, connect(settings), Keys(settings.key_prefix), ModelCache(registry))

    def chunker(self) -> Chunker:
        return Chunker(self.settings.chunk_tokens, self.settings.chunk_interval_ms / 1000)


def run_job(ctx: WorkerContext, request: GenerateRequest, worker: str) -> None:
    """Raises the job's GenqError after publishing it, so Celery (and Flower) see the failure."""
    record = _claim(ctx, request, worker)
    if record is None:
        return
    lease = Lease(ctx.redis, ctx.keys, request.job_id, request.epoch, ctx.settings.lease_ttl_s)
    with lease:
        pub = FramePublisher(ctx.redis, ctx.keys, request.job_id, request.epoch, lease)
        try:
            _run(ctx, record, pub)
        except LeaseLost as exc:
            log.warning("%s; its newer attempt carries on", exc)
        except GenqError as exc:
            _fail(ctx, pub, record, exc)
            raise
        except Exception as exc:
            _fail(ctx, pub, record, GenerationError(f"{type(exc).__name__}: {exc}"))
            raise


def _run(ctx: WorkerContext, record: JobRecord, pub: FramePublisher) -> None:
    backend = ctx.models.get(record.spec.model)
    committed = _resume_point(ctx, pub) if pub.epoch > 0 else Committed()
    log.info(
        "job %s epoch %d: model %s, from window %d",
        pub.job_id,
        pub.epoch,
        record.spec.model,
        committed.windows,
    )
    out = generate(backend, record.spec, pub, ctx.chunker(), committed)
    _succeed(ctx, pub, record, out)


def _claim(ctx: WorkerContext, request: GenerateRequest, worker: str) -> JobRecord | None:
    """The job's record, now running under this attempt's lease; None when there is nothing
    to run: finished, a message of another epoch, held by a live attempt (Celery may deliver a
    message twice), or cancelled or expired while queued (then ended here)."""
    keys, job_id = ctx.keys, request.job_id
    key = keys.job(job_id)
    names = [key, keys.leases, keys.cancel(job_id), keys.expiries]
    if request.batch_id:
        names.append(keys.batch(request.batch_id))
    started = now_ms()
    lease_ms = int(ctx.settings.lease_ttl_s * 1000)
    args: list[str | int] = [job_id, request.epoch, started, lease_ms, worker]
    outcome = ctx.redis.eval(CLAIM, len(names), *names, *args)
    if outcome in {JobState.CANCELLED, JobState.EXPIRED}:
        end_unstarted(ctx.redis, keys, ctx.settings.job_ttl_s, job_id, JobState(outcome))
    if outcome != "claimed":
        log.info("job %s epoch %d: %s; not started", job_id, request.epoch, outcome)
        return None
    record = JobRecord.from_hash(ctx.redis.hgetall(key))
    return record.model_copy(update={"state": JobState.RUNNING, "started_ms": started})


def _resume_point(ctx: WorkerContext, pub: FramePublisher) -> Committed:
    """The checkpointed windows, announced with a `resume` frame: readers drop any text of
    the lost attempt beyond `committed_chars`."""
    entries = [json.loads(e) for e in ctx.redis.lrange(ctx.keys.checkpoint(pub.job_id), 0, -1)]
    token_ids = [t for entry in entries for t in entry["token_ids"]]
    chars = sum(len(entry["text"]) for entry in entries)
    finish = entries[-1]["finish_reason"] if entries else None
    pub.resume(
        ResumeData(from_window=len(entries), committed_tokens=len(token_ids), committed_chars=chars)
    )
    return Committed(len(entries), token_ids, finish)


def _succeed(ctx: WorkerContext, pub: FramePublisher, record: JobRecord, out: Generated) -> None:
    finished = now_ms()
    result = JobResult(
        job_id=pub.job_id,
        model=record.spec.model,
        text=out.text,
        finish_reason=out.finish_reason,
        usage=Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens),
        timings=_timings(record, pub.first_token_ms, finished, out.completion_tokens),
    )
    cancelled = out.finish_reason is FinishReason.CANCELLED
    fields = {
        "state": JobState.CANCELLED if cancelled else JobState.SUCCEEDED,
        "finished_ms": finished,
        "result": result.model_dump_json(),
    }
    _end(ctx, pub, record, fields, pub.done(result), out.completion_tokens)


def _fail(ctx: WorkerContext, pub: FramePublisher, record: JobRecord, exc: GenqError) -> None:
    log.warning("job %s epoch %d failed: %s", pub.job_id, pub.epoch, exc)
    try:
        frame = pub.error(exc.code, str(exc), exc.retryable)
    except LeaseLost:
        return  # a newer attempt owns the job's outcome
    fields = {
        "state": JobState.FAILED,
        "finished_ms": now_ms(),
        "error": str(exc),
        "error_code": exc.code,
    }
    _end(ctx, pub, record, fields, frame, 0)


def _end(
    ctx: WorkerContext,
    pub: FramePublisher,
    record: JobRecord,
    fields: dict[str, Any],
    frame: str,
    tokens: int,
) -> None:
    """Final record and terminal frame in one script, for the current epoch only: whoever sees
    the frame can read the final record, and a superseded attempt writes neither."""
    finish = Finish(pub.job_id, pub.epoch, record.batch_id, JobState.RUNNING, fields, frame, tokens)
    if not finish.run(ctx.redis, ctx.keys, ctx.settings.job_ttl_s):
        log.warning("job %s epoch %d: superseded before it ended", pub.job_id, pub.epoch)


def _timings(record: JobRecord, first_ms: int | None, finished_ms: int, tokens: int) -> Timings:
    generation_ms = max(finished_ms - record.started_ms, 0)
    return Timings(
        queue_wait_ms=max(record.started_ms - record.submitted_ms, 0),
        first_token_ms=max((first_ms or finished_ms) - record.submitted_ms, 0),
        generation_ms=generation_ms,
        tokens_per_s=tokens / (generation_ms / 1000) if generation_ms else 0.0,
    )
