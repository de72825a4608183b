"""Running one job attempt: claim it (an epoch, a lease), resume from its checkpoint when it
is not the first attempt, generate, and end it with a `done` or `error` frame published
together with the job's final record, unless a newer attempt has taken the job over."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from genq.common.connection import connect, worker_pool_size
from genq.common.errors import GenerationError, GenqError
from genq.common.frames import ResumeData
from genq.common.lifecycle import Finish, end_unstarted, now_ms
from genq.common.logs import fields as log_fields
from genq.common.plan import resolve
from genq.common.registry import ModelRegistry
from genq.common.routing import worker_slots
from genq.common.schemas import (
    FinishReason,
    GenerateRequest,
    JobRecord,
    JobResult,
    JobState,
    Timings,
    Usage,
)
from genq.common.settings import Settings
from genq.common.store import leases as lease_store
from genq.common.store import run, streams
from genq.common.store.keys import Keys
from genq.common.store.leases import ClaimOutcome
from genq.workers.backends.models import MB, ModelCache
from genq.workers.celery.handoff import DRAINING, HandBack, HandOff
from genq.workers.celery.lease import Lease, LeaseLost, Leases
from genq.workers.celery.takeback import TakeBack
from genq.workers.generation.chunks import Chunker
from genq.workers.generation.loop import Generated, generate
from genq.workers.generation.resume import Committed, committed
from genq.workers.publishing.observe import AttemptInfo, JobObserver, Observers
from genq.workers.publishing.outbox import Outbox
from genq.workers.publishing.publisher import FramePublisher

ObserverFactory = Callable[[AttemptInfo], JobObserver]

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What one worker process keeps between jobs: settings, Redis, loaded models."""

    settings: Settings
    redis: redis.Redis
    keys: Keys
    models: ModelCache
    # Called for each attempt (metrics, Flower's progress events): see workers.publishing.observe.
    observers: list[ObserverFactory] = field(default_factory=list)
    # One outbox per job thread (a worker with slots runs a task message per thread).
    _outboxes: threading.local = field(default_factory=threading.local)
    _hand_back: HandBack | None = None
    _take_back: TakeBack | None = None

    @property
    def take_back(self) -> TakeBack:
        if self._take_back is None:
            self._take_back = TakeBack(self.redis, self.keys, self.settings)
        return self._take_back

    @property
    def hand_back(self) -> HandBack:
        if self._hand_back is None:
            self._hand_back = HandBack(self.redis, self.keys, self.settings)
        return self._hand_back

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        registry = ModelRegistry.from_settings(settings)
        return cls(
            settings,
            connect(settings, worker_pool_size(worker_slots(settings, registry))),
            Keys(settings.key_prefix),
            ModelCache(registry, resolve(settings, registry), int(settings.model_budget_mb * MB)),
        )

    def outbox(self, max_delay_s: float) -> Outbox:
        """The thread's outbox (publishing/outbox), set to let endings wait `max_delay_s`."""
        outbox: Outbox | None = getattr(self._outboxes, "outbox", None)
        if outbox is None:
            outbox = Outbox(self.redis, self.keys, self.settings.job_ttl_s)
            self._outboxes.outbox = outbox
        outbox.max_delay_s = max_delay_s
        return outbox

    def chunker(self, eager: bool) -> Chunker:
        interval_s = self.settings.chunk_interval_ms / 1000
        return Chunker(self.settings.chunk_tokens, interval_s, eager=eager)


def run_jobs(
    ctx: WorkerContext,
    requests: Sequence[GenerateRequest],
    worker: str,
    observers: Sequence[ObserverFactory] = (),
) -> None:
    """Run a task message's jobs (one, or a bundle of short ones) one after another. They
    are all claimed at once, in one round trip; one job's failure does not stop the others.
    Raises the first job's GenqError after publishing it, so Celery (and Flower) see it.
    `observers` hear each attempt, after the context's own. When Redis was lost under them,
    those left queued are sent again once it is back (workers.celery.takeback)."""
    try:
        _run_jobs(ctx, requests, worker, observers)
    except (redis.ConnectionError, redis.TimeoutError):
        ctx.take_back.resend_later(requests)
        raise


def _run_jobs(
    ctx: WorkerContext,
    requests: Sequence[GenerateRequest],
    worker: str,
    observers: Sequence[ObserverFactory],
) -> None:
    claimed = claim(ctx, requests, worker)
    if not claimed:
        return
    ttl_s = ctx.settings.lease_ttl_s
    failure: Exception | None = None
    jobs = {request.job_id: request.epoch for request, _ in claimed}
    # A bundle runs for throughput: no first token on its own, and its jobs' endings share
    # round trips (genq.workers.publishing.outbox).
    eager = len(requests) == 1
    outbox = ctx.outbox(0.0 if eager else ctx.settings.chunk_interval_ms / 1000)
    with Leases(ctx.redis, ctx.keys, jobs, ttl_s) as leases:
        for request, record in claimed:
            try:
                lease = leases.lease(request.job_id)
                info = AttemptInfo(
                    lease.job_id,
                    lease.epoch,
                    record.spec.model,
                    record.batch_id,
                    worker,
                    record.tenant,
                    max(record.started_ms - record.submitted_ms, 0) / 1000,
                )
                observer = Observers([make(info) for make in (*ctx.observers, *observers)])
                if DRAINING.is_set():  # a bundle's later jobs, when the worker shuts down
                    _hand_off(ctx, request, record, observer)
                    continue
                _attempt(ctx, record, lease, eager, outbox, info, observer, request)
            except Exception as exc:  # reported once the bundle's other jobs have run
                failure = failure or exc
            finally:
                leases.release(request.job_id)
        try:
            outbox.flush()  # before the lease thread stops: nothing is left waiting after the task
        except redis.RedisError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def _attempt(
    ctx: WorkerContext,
    record: JobRecord,
    lease: Lease,
    eager: bool,
    outbox: Outbox,
    info: AttemptInfo,
    observer: JobObserver,
    request: GenerateRequest,
) -> None:
    job_id, epoch = lease.job_id, lease.epoch
    pub = FramePublisher(
        ctx.redis, ctx.keys, job_id, epoch, outbox, lease, observer, worker=info.worker
    )
    record = record.model_copy(update={"started_ms": now_ms()})  # a bundle's jobs wait their turn
    try:
        _run(ctx, record, pub, eager, info)
    except LeaseLost as exc:
        log.warning(
            "job superseded: %s; its newer attempt carries on",
            exc,
            extra=_fields(pub, record),
        )
        observer.ended("superseded", pub.first_token_ms)
    except HandOff:
        _hand_off(ctx, request, record, observer, pub.first_token_ms)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis went away under the attempt. Nothing can be recorded now, and a failure
        # recorded once it is back would fail a job that only lost its connection: the
        # attempt is abandoned instead, its lease lapses and the relay resumes the job,
        # bit for bit, on whichever worker has a free slot.
        log.warning(
            "job abandoned: lost Redis (%s); it resumes from its stream once Redis is back",
            exc,
            extra=_fields(pub, record),
        )
        observer.ended("abandoned", pub.first_token_ms)
        raise
    except GenqError as exc:
        _fail(ctx, pub, record, exc)
        raise
    except Exception as exc:
        _fail(ctx, pub, record, GenerationError(f"{type(exc).__name__}: {exc}"))
        raise


def _run(
    ctx: WorkerContext, record: JobRecord, pub: FramePublisher, eager: bool, info: AttemptInfo
) -> None:
    with ctx.models.use(record.spec.model) as backend:
        committed = _resume_point(ctx, pub) if pub.epoch > 0 else Committed()
        log.info("job started", extra=_fields(pub, record, from_window=committed.windows))
        pub.observer.started(info, committed.windows)
        out = generate(backend, record.spec, pub, ctx.chunker(eager), committed)
    _succeed(ctx, pub, record, out)


def claim(
    ctx: WorkerContext, requests: Sequence[GenerateRequest], worker: str
) -> list[tuple[GenerateRequest, JobRecord]]:
    """The jobs now running under this worker's leases, in order, each with the request it
    runs as: with the fair share (GENQ_FAIR_SHARE) a message at epoch 0 is a ticket, and the
    job it claimed is the fairest waiting one of its queue, often not the message's own. A
    message claims nothing when there is nothing to run: its job finished, a message of
    another epoch, held by a live attempt (Celery may deliver a message twice), cancelled or
    expired while queued (then ended here, as are those a ticket passed), or a ticket that
    found no job waiting."""
    pairs = [(r.job_id, r.epoch) for r in requests]
    lease_ms = int(ctx.settings.lease_ttl_s * 1000)
    fair = ctx.settings.fair_share
    command = lease_store.claim(ctx.keys, pairs, worker, now_ms(), lease_ms, fair)
    outcomes = run(ctx.redis, command)
    claimed = []
    for request, claim in zip(requests, outcomes, strict=True):
        for job_id, outcome in claim.dropped:
            _end_unstarted(ctx, job_id, outcome)
        if claim.record is not None:
            record = claim.record
            ran = GenerateRequest(job_id=claim.job_id, epoch=record.epoch, batch_id=record.batch_id)
            claimed.append((ran, record))
            continue
        _end_unstarted(ctx, claim.job_id, claim.outcome)
        log.info(
            "job not started",
            extra=log_fields(job=claim.job_id, epoch=request.epoch, outcome=claim.outcome),
        )
    return claimed


def _end_unstarted(ctx: WorkerContext, job_id: str, outcome: ClaimOutcome) -> None:
    """End a queued job the claim found cancelled or expired (other outcomes: nothing to do)."""
    if outcome in {ClaimOutcome.CANCELLED, ClaimOutcome.EXPIRED}:
        state = JobState(outcome.value)
        end_unstarted(ctx.redis, ctx.keys, ctx.settings.job_ttl_s, job_id, state)


def _hand_off(
    ctx: WorkerContext,
    request: GenerateRequest,
    record: JobRecord,
    observer: JobObserver,
    first_token_ms: int | None = None,
) -> None:
    """The worker shuts down: requeue the job for another worker (genq.workers.celery.handoff)."""
    handed = ctx.hand_back(request, record.spec.model)
    observer.ended("handed_off" if handed else "superseded", first_token_ms)


def _resume_point(ctx: WorkerContext, pub: FramePublisher) -> Committed:
    """Everything the job's stream holds (generation/resume), announced with a `resume` frame:
    readers drop any text of the lost attempt beyond `committed_chars`."""
    entries = run(ctx.redis, streams.entries(ctx.keys, pub.job_id))
    frames = run(ctx.redis, streams.raw_frames(ctx.keys, pub.job_id))
    point = committed(entries, frames, pub.job_id)
    pub.resume(
        ResumeData(
            from_window=point.windows,
            committed_tokens=point.total_tokens,
            committed_chars=point.total_chars,
        )
    )
    return point


def _succeed(ctx: WorkerContext, pub: FramePublisher, record: JobRecord, out: Generated) -> None:
    finished = now_ms()
    result = JobResult(
        job_id=pub.job_id,
        model=record.spec.model,
        text=out.text,
        finish_reason=out.finish_reason,
        usage=Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens),
        timings=_timings(record, pub.first_token_ms, finished, out.completion_tokens),
        logprobs=out.logprobs,
    )
    cancelled = out.finish_reason is FinishReason.CANCELLED
    state = JobState.CANCELLED if cancelled else JobState.SUCCEEDED
    fields = {
        "state": state,
        "started_ms": record.started_ms,
        "finished_ms": finished,
        "result": result.model_dump_json(),
    }
    _end(ctx, pub, record, fields, pub.done(result), out.completion_tokens, out.prompt_tokens)
    pub.observer.ended(state, pub.first_token_ms)
    log.info(
        "job ended",
        extra=_fields(
            pub,
            record,
            state=state.value,
            finish=out.finish_reason.value,
            tokens=out.completion_tokens,
            windows=out.windows,
            ms=finished - record.started_ms,
        ),
    )


def _fail(ctx: WorkerContext, pub: FramePublisher, record: JobRecord, exc: GenqError) -> None:
    log.warning("job failed: %s", exc, extra=_fields(pub, record, code=exc.code))
    try:
        frame = pub.error(exc.code, str(exc), exc.retryable)
    except LeaseLost:  # a newer attempt owns the job's outcome
        pub.observer.ended("superseded", pub.first_token_ms)
        return
    fields = {
        "state": JobState.FAILED,
        "started_ms": record.started_ms,
        "finished_ms": now_ms(),
        "error": str(exc),
        "error_code": exc.code,
    }
    _end(ctx, pub, record, fields, frame, 0)
    pub.observer.ended(JobState.FAILED, pub.first_token_ms)


def _end(
    ctx: WorkerContext,
    pub: FramePublisher,
    record: JobRecord,
    fields: dict[str, Any],
    frame: str,
    tokens: int,
    prompt_tokens: int = 0,
) -> None:
    """Final record and terminal frame in one script, for the current epoch only: whoever sees
    the frame can read the final record, and a superseded attempt writes neither. They go out
    with the frames held back for this round trip, through the outbox (at once for a lone job)."""
    running = JobState.RUNNING
    finish = Finish(
        pub.job_id, pub.epoch, record.batch_id, running, fields, frame, tokens, prompt_tokens
    )

    def superseded() -> None:
        log.warning("job superseded before it ended", extra=_fields(pub, record))

    pub.outbox.add(pub.channel, pub.pending(), finish, superseded)


def _fields(pub: FramePublisher, record: JobRecord, **more: Any) -> dict[str, Any]:
    """A job event's log fields (the worker's name is on every line of the process)."""
    batch = {"batch": record.batch_id} if record.batch_id else {}
    return log_fields(job=pub.job_id, epoch=pub.epoch, model=record.spec.model, **batch, **more)


def _timings(record: JobRecord, first_ms: int | None, finished_ms: int, tokens: int) -> Timings:
    generation_ms = max(finished_ms - record.started_ms, 0)
    return Timings(
        queue_wait_ms=max(record.started_ms - record.submitted_ms, 0),
        first_token_ms=max((first_ms or finished_ms) - record.submitted_ms, 0),
        generation_ms=generation_ms,
        tokens_per_s=tokens / (generation_ms / 1000) if generation_ms else 0.0,
    )
