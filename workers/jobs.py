"""Running one job attempt: read its record, mark it running, generate, and end it with a
`done` or `error` frame published together with the job's final record."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from common.connection import connect
from common.errors import GenerationError, GenqError
from common.keys import Keys
from common.registry import ModelRegistry
from common.schemas import GenerateRequest, JobRecord, JobResult, JobState, Timings, Usage
from common.settings import Settings
from workers.chunks import Chunker
from workers.generation import Generated, generate
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
    pub = FramePublisher(ctx.redis, ctx.keys, request.job_id, request.epoch)
    try:
        backend = ctx.models.get(record.spec.model)
        log.info("job %s epoch %d: model %s", request.job_id, request.epoch, record.spec.model)
        out = generate(backend, record.spec, pub.token, ctx.chunker())
    except GenqError as exc:
        _fail(ctx, pub, exc)
        raise
    except Exception as exc:
        _fail(ctx, pub, GenerationError(f"{type(exc).__name__}: {exc}"))
        raise
    _succeed(ctx, pub, record, out)


def _claim(ctx: WorkerContext, request: GenerateRequest, worker: str) -> JobRecord | None:
    """The job's record, now marked running; None when there is nothing to run (expired,
    already finished, or a message for another epoch delivered again)."""
    key = ctx.keys.job(request.job_id)
    raw = ctx.redis.hgetall(key)
    if not raw:
        log.warning("job %s: no record (expired or never submitted); skipped", request.job_id)
        return None
    record = JobRecord.from_hash(raw)
    if record.state.terminal or record.epoch != request.epoch:
        log.info(
            "job %s epoch %d: already %s; skipped", request.job_id, request.epoch, record.state
        )
        return None
    started = now_ms()
    pipe = ctx.redis.pipeline()
    pipe.hset(key, mapping={"state": JobState.RUNNING, "worker": worker, "started_ms": started})
    pipe.hincrby(key, "attempts", 1)
    pipe.execute()
    return record.model_copy(update={"state": JobState.RUNNING, "started_ms": started})


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
    fields = {
        "state": JobState.SUCCEEDED,
        "finished_ms": finished,
        "result": result.model_dump_json(),
    }
    _end(ctx, pub.job_id, fields, pub.channel, pub.done(result))


def _fail(ctx: WorkerContext, pub: FramePublisher, exc: GenqError) -> None:
    log.warning("job %s epoch %d failed: %s", pub.job_id, pub.epoch, exc)
    frame = pub.error(exc.code, str(exc), exc.retryable)
    fields = {"state": JobState.FAILED, "finished_ms": now_ms(), "error": str(exc)}
    _end(ctx, pub.job_id, fields, pub.channel, frame)


def _end(
    ctx: WorkerContext, job_id: str, fields: dict[str, object], channel: str, frame: str
) -> None:
    """Final record and terminal frame in one transaction: whoever sees the frame can read
    the final record."""
    key = ctx.keys.job(job_id)
    mapping: Mapping[Any, Any] = {name: str(value) for name, value in fields.items()}
    pipe = ctx.redis.pipeline()
    pipe.hset(key, mapping=mapping)
    pipe.expire(key, ctx.settings.job_ttl_s)
    pipe.publish(channel, frame)
    pipe.execute()


def _timings(record: JobRecord, first_ms: int | None, finished_ms: int, tokens: int) -> Timings:
    generation_ms = max(finished_ms - record.started_ms, 0)
    return Timings(
        queue_wait_ms=max(record.started_ms - record.submitted_ms, 0),
        first_token_ms=max((first_ms or finished_ms) - record.submitted_ms, 0),
        generation_ms=generation_ms,
        tokens_per_s=tokens / (generation_ms / 1000) if generation_ms else 0.0,
    )
