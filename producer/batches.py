"""Batches: many jobs submitted as one, watched, read back in input order and cancelled as one.

    with Client() as client:
        batch = client.submit_batch("prompts.jsonl", defaults={"max_tokens": 64})
        batch.wait(progress=lambda s: print(f"{s.ended}/{s.total}"))
        for line in batch.results():
            print(line.custom_id, line.status, line.text)

A batch's jobs are ordinary jobs (each has a job id, a record and a stream) that also belong
to the batch: `genq:batch:{id}` counts them by state, `...:jobs` lists them in input order, and
`...:ids` maps each custom_id to its job, which makes resubmitting a batch idempotent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from common.connection import redis_errors, unavailable
from common.errors import ErrorCode, InvalidBatch, InvalidJob, StreamTimeout
from common.keys import check_batch_id, new_batch_id
from common.lifecycle import Finish, now_ms, unstarted_finish
from common.schemas import (
    DEFAULT_PRIORITY,
    BatchStatus,
    JobRecord,
    JobState,
    ResultError,
    ResultLine,
)
from common.scripts import SUBMIT
from producer.batchfile import BatchLine, Reject, Source, scan, valid_lines
from producer.bundles import dispatches
from producer.core import PreparedJob
from producer.retry import retrying

if TYPE_CHECKING:
    from producer.client import Client, JobHandle

SUBMIT_CHUNK = 500  # jobs written and dispatched per round
FIRST_CHUNK = 50  # smaller, so that workers start while the rest is written
PAGE = 500  # jobs read per round when reading results or cancelling
POLL_S = 0.5
SHOWN_REJECTS = 20
_RESULT_FIELDS = ("state", "custom_id", "result", "error", "error_code")


@dataclass(frozen=True)
class BatchOptions:
    """How a batch is submitted. `defaults` are job fields that lines may override."""

    batch_id: str | None = None
    priority: int = DEFAULT_PRIORITY
    expires_in_s: float | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    skip_invalid: bool = False


@dataclass(frozen=True)
class Submission:
    """What one submission did: jobs created, lines already in the batch (a resubmission),
    and the lines rejected (with `skip_invalid`)."""

    created: int = 0
    existing: int = 0
    rejects: list[Reject] = field(default_factory=list)


@dataclass(frozen=True)
class CancelReport:
    not_started: int  # queued jobs ended as cancelled
    signalled: int  # running jobs told to stop (they end `cancelled` within a chunk)
    already_ended: int

    def __add__(self, other: CancelReport) -> CancelReport:
        return CancelReport(
            self.not_started + other.not_started,
            self.signalled + other.signalled,
            self.already_ended + other.already_ended,
        )


def describe_rejects(source_name: str, rejects: Sequence[Reject]) -> str:
    shown = [f"  line {r.line}: {r.reason}" for r in rejects[:SHOWN_REJECTS]]
    more = len(rejects) - SHOWN_REJECTS
    if more > 0:
        shown.append(f"  ... and {more} more (--skip-invalid writes every one to a file)")
    noun = "line" if len(rejects) == 1 else "lines"
    head = f"{source_name}: {len(rejects)} invalid {noun}; nothing was submitted"
    return "\n".join([head, *shown])


class BatchSubmitter:
    """Validates a whole batch first, then writes and dispatches it in chunks: one script call
    and one pipelined publish per chunk."""

    def __init__(self, client: Client, options: BatchOptions) -> None:
        self.client = client
        self.options = options
        given = options.batch_id
        self.batch_id = new_batch_id() if given is None else check_batch_id(given)  # '' too
        expires_in = options.expires_in_s
        self.expires_ms = now_ms() + int(expires_in * 1000) if expires_in else 0
        self._opened = False  # the batch's record is written with its first chunk

    def submit(self, source: Source, progress: Callable[[int], None] | None = None) -> Submission:
        if not isinstance(source, str) and not hasattr(source, "open"):
            source = list(source)  # read twice: once to check, once to submit
        defaults = self.options.defaults
        found = scan(source, defaults, self.client._check)
        name = str(source) if isinstance(source, str) or hasattr(source, "open") else "batch"
        if found.valid == 0 and not found.rejects:
            raise InvalidBatch(f"{name}: no jobs in it (it is empty)", [])
        if found.rejects and not self.options.skip_invalid:
            raise InvalidBatch(describe_rejects(name, found.rejects), _pairs(found.rejects))
        if found.valid == 0:
            raise InvalidBatch(f"{name}: every line is invalid; nothing was submitted", [])
        created = existing = 0
        lines = valid_lines(source, defaults, found.rejected_lines)
        for chunk in _chunks(lines, SUBMIT_CHUNK, first=FIRST_CHUNK):
            made = self._submit_chunk(chunk)
            created, existing = created + made, existing + len(chunk) - made
            if progress is not None:
                progress(created + existing)
        return Submission(created, existing, found.rejects)

    def _write(self, names: list[str], args: list[Any]) -> set[str]:
        """Run SUBMIT for a chunk; the first chunk opens the batch's record in the same
        transaction, so that a batch exists only once a job of it does. Returns the job ids
        created."""
        pipe = self.client.redis.pipeline(transaction=True)
        if not self._opened:
            key = names[0]
            for field_name, value in (
                ("created_ms", now_ms()),
                ("priority", self.options.priority),
                ("expires_ms", self.expires_ms),
            ):
                pipe.hsetnx(key, field_name, value)
        pipe.eval(SUBMIT, len(names), *names, *args)  # it sets the record's expiry
        created = pipe.execute()[-1]
        if created is None:
            raise InvalidBatch(
                f"batch {self.batch_id} was cancelled: it takes no new jobs "
                "(submit under another batch id)",
                [],
            )
        self._opened = True
        return {str(job_id) for job_id in created}

    def _submit_chunk(self, chunk: list[BatchLine]) -> int:
        """Write the chunk's new jobs, dispatch them (and any earlier job of the batch whose
        dispatch was interrupted), then mark them dispatched. Returns the jobs created."""
        client, keys = self.client, self.client.keys
        jobs = [self._prepare(line) for line in chunk]
        names = [
            keys.batch(self.batch_id),
            keys.batch_jobs(self.batch_id),
            keys.batch_index(self.batch_id),
            keys.expiries,
            *(keys.job(job.job_id) for _, job in jobs),
        ]
        args: list[Any] = [client.settings.job_ttl_s]
        for custom_id, job in jobs:
            record = json.dumps(dict(job.record.to_hash()))
            args += [custom_id, job.job_id, job.record.expires_ms, record]
        with redis_errors(client.settings):
            created = self._write(names, args)
            pending = [job for _, job in jobs if job.job_id in created]
            if len(created) < len(jobs):
                pending += self._undispatched(
                    [cid for cid, job in jobs if job.job_id not in created]
                )
        self._dispatch(pending)
        return len(created)

    def _prepare(self, line: BatchLine) -> tuple[str, PreparedJob]:
        job = self.client._prepare(line.spec, {})
        record = job.record.model_copy(
            update={
                "batch_id": self.batch_id,
                "custom_id": line.custom_id,
                "priority": self.options.priority,
                "expires_ms": self.expires_ms,
                "dispatched": False,
            }
        )
        return line.custom_id, PreparedJob(job.job_id, record)

    def _undispatched(self, custom_ids: list[str]) -> list[PreparedJob]:
        """Jobs of an earlier submission of this batch that were written but whose dispatch
        did not complete (the submitter died): dispatched again. A second message for a job is
        harmless: only one attempt can claim it."""
        redis, keys = self.client.redis, self.client.keys
        job_ids = [str(j) for j in redis.hmget(keys.batch_index(self.batch_id), custom_ids)]
        pipe = redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        out = []
        for job_id, raw in zip(job_ids, pipe.execute(), strict=True):
            if raw and raw.get("dispatched") == "False" and raw.get("state") == JobState.QUEUED:
                out.append(PreparedJob(job_id, JobRecord.from_hash(raw)))
        return out

    def _dispatch(self, jobs: list[PreparedJob]) -> None:
        if not jobs:
            return
        client = self.client
        settings = client.settings
        try:
            client._dispatcher.send(dispatches(jobs, settings.bundle_tokens, settings.bundle_jobs))
        except Exception as exc:  # not queued; a resubmission with this batch id resumes
            raise unavailable(client.settings, exc) from exc
        with redis_errors(client.settings):
            pipe = client.redis.pipeline(transaction=False)
            for job in jobs:
                pipe.hset(client.keys.job(job.job_id), "dispatched", "True")
            pipe.execute()


def _pairs(rejects: Sequence[Reject]) -> list[tuple[int, str]]:
    return [(r.line, r.reason) for r in rejects]


T = TypeVar("T")


def _chunks(items: Iterable[T], size: int, first: int | None = None) -> Iterator[list[T]]:
    """Lists of `size` items (the first one of `first`), the last one shorter."""
    chunk: list[T] = []
    want = first or size
    for item in items:
        chunk.append(item)
        if len(chunk) == want:
            yield chunk
            chunk, want = [], size
    if chunk:
        yield chunk


def result_line(job_id: str, values: Sequence[str | None]) -> ResultLine | None:
    """A job's results line from its fields (`_RESULT_FIELDS`); None while it has not ended."""
    state, custom_id, result, error, code = values
    if state is None:  # the record's retention passed
        message = "the job's record is no longer kept (GENQ_JOB_TTL_S)"
        err = ResultError(code=ErrorCode.NOT_RETAINED, message=message)
        return ResultLine(custom_id="", job_id=job_id, status=JobState.FAILED, error=err)
    status = JobState(state)
    if not status.terminal:
        return None
    fields: dict[str, Any] = {"custom_id": custom_id or "", "job_id": job_id, "status": status}
    if result:
        outcome = json.loads(result)
        fields |= {k: outcome[k] for k in ("text", "finish_reason", "usage")}
    if error:
        fields["error"] = {"code": code or ErrorCode.GENERATION_FAILED, "message": error}
    return ResultLine.model_validate(fields)


class BatchHandle:
    """A batch: `status()`, `wait()`, `results()` in input order, `cancel()`, and its `jobs()`.
    After a submission, `submission` says what it created and what it rejected."""

    def __init__(self, client: Client, batch_id: str, submission: Submission | None = None) -> None:
        self.batch_id = batch_id
        self.submission = submission or Submission()
        self._client = client
        self._keys = client.keys

    @property
    def rejects(self) -> list[Reject]:
        return self.submission.rejects

    def status(self) -> BatchStatus:
        """The batch's counts by state; a lost Redis connection is retried (GENQ_REDIS_RETRY_S)."""
        key, r = self._keys.batch(self.batch_id), self._client.redis
        raw: Mapping[Any, Any] = retrying(self._client.settings, lambda: r.hgetall(key))
        if not raw:
            raise InvalidJob(
                f"no batch {self.batch_id} (never submitted, or its retention has passed)"
            )
        return BatchStatus.from_hash(self.batch_id, raw)

    def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[BatchStatus], None] | None = None,
        poll_s: float = POLL_S,
    ) -> BatchStatus:
        """Wait until every job ended; `progress` gets each status read meanwhile. Raises
        StreamTimeout when `timeout` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if progress is not None:
                progress(status)
            if status.complete:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise StreamTimeout(
                    f"batch {self.batch_id}: {status.ended} of {status.total} jobs ended "
                    "within the timeout"
                )
            time.sleep(poll_s)

    def job_ids(self) -> Iterator[str]:
        """The batch's job ids in input order, read a page at a time."""
        redis, key = self._client.redis, self._keys.batch_jobs(self.batch_id)
        start = 0
        while True:
            read = partial(redis.lrange, key, start, start + PAGE - 1)
            page = retrying(self._client.settings, read)
            yield from map(str, page)
            if len(page) < PAGE:
                return
            start += PAGE

    def jobs(self) -> Iterator[JobHandle]:
        """A handle on each job, in input order, to stream it (see Client.stream_many)."""
        for job_id in self.job_ids():
            yield self._client.job(job_id, check=False)

    def results(self, wait: bool = True, poll_s: float = POLL_S) -> Iterator[ResultLine]:
        """One line per job in input order, each as soon as its job (and those before it)
        ended. With wait=False, stops at the first job that has not ended. A lost Redis
        connection is retried (GENQ_REDIS_RETRY_S), and no line is repeated or left out."""
        for page in _chunks(self.job_ids(), PAGE):
            pending = page
            while pending:
                rows = retrying(self._client.settings, partial(self._read_results, pending))
                ready = 0
                for job_id, values in zip(pending, rows, strict=True):
                    line = result_line(job_id, values)
                    if line is None:
                        break
                    ready += 1
                    yield line
                pending = pending[ready:]
                if pending and not wait:
                    return
                if pending:
                    time.sleep(poll_s)

    def _read_results(self, job_ids: list[str]) -> list[Any]:
        pipe = self._client.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self._keys.job(job_id), _RESULT_FIELDS)
        return pipe.execute()

    def cancel(self) -> CancelReport:
        """Cancel every job of the batch: queued ones never start, running ones stop within a
        chunk and keep their partial text, ended ones keep their results."""
        client = self._client
        with redis_errors(client.settings):
            # "1", as the CLAIM and SUBMIT scripts compare it: no job of the batch starts, and
            # none joins it, whatever becomes of the per-job cancel keys written below.
            client.redis.hset(self._keys.batch(self.batch_id), "cancel_requested", "1")
        report = CancelReport(0, 0, 0)
        for page in _chunks(self.job_ids(), PAGE):
            report = report + client._cancel_jobs(page)
        return report


def cancel_calls(
    job_ids: Sequence[str], records: Sequence[Mapping[str, str]]
) -> tuple[list[Finish], CancelReport]:
    """The FINISH calls that end the never-started jobs among `job_ids` as cancelled, and what
    the cancel does to each job. A job queued again after its worker died is left to the
    worker that claims it, which sees the cancel and ends it with its committed text."""
    finishes = []
    signalled = ended = 0
    for job_id, raw in zip(job_ids, records, strict=True):
        state = raw.get("state")
        if state == JobState.QUEUED and raw.get("epoch") == "0":
            record = JobRecord.from_hash(raw)
            finishes.append(unstarted_finish(job_id, record, JobState.CANCELLED, []))
        elif state in {JobState.QUEUED, JobState.RUNNING}:
            signalled += 1
        else:
            ended += 1
    return finishes, CancelReport(len(finishes), signalled, ended)
