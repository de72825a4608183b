"""Submitting a batch: `BatchSubmitter` checks every line first (producer/batchfile.py), holds
the whole batch to its tenant's quotas (producer/quotas.py), then writes and dispatches the
batch's jobs in chunks; `Submission` says what it did. Both client
faces run it as it is: `AsyncClient.submit_batch` in a thread, as reading the source and
publishing to the broker block."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from genq.common.connection import redis_errors
from genq.common.errors import GenqError, InvalidBatch
from genq.common.ids import check_batch_id, new_batch_id
from genq.common.lifecycle import now_ms
from genq.common.schemas import DEFAULT_PRIORITY, JobSpec, JobState
from genq.common.store import batches as batch_store
from genq.common.store import jobs as job_store
from genq.common.store import run, run_all, run_transaction
from genq.common.store.batches import NewJob, Opening
from genq.common.tenants import DEFAULT_TENANT
from genq.producer.batchfile import BatchLine, Reject, Scan, Source, scan, valid_lines
from genq.producer.bundles import dispatches
from genq.producer.core import PreparedJob
from genq.producer.quotas import Admission, job_cost
from genq.producer.submitter import Submitter

SUBMIT_CHUNK = 500  # jobs written and dispatched per round
FIRST_CHUNK = 50  # smaller, so that workers start while the rest is written
SHOWN_REJECTS = 20


@dataclass(frozen=True)
class BatchOptions:
    """How a batch is submitted. `defaults` are job fields that lines may override."""

    batch_id: str | None = None
    priority: int = DEFAULT_PRIORITY
    expires_in_s: float | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    skip_invalid: bool = False
    tenant: str = DEFAULT_TENANT


@dataclass(frozen=True)
class Submission:
    """What one submission did: jobs created, lines already in the batch (a resubmission),
    and the lines rejected (with `skip_invalid`)."""

    created: int = 0
    existing: int = 0
    rejects: list[Reject] = field(default_factory=list)


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

    def __init__(
        self, submitter: Submitter, options: BatchOptions, connection: redis.Redis
    ) -> None:
        self.submitter = submitter
        self.redis = connection  # sync: AsyncClient runs a submission in a thread
        self.options = options
        given = options.batch_id
        self.batch_id = new_batch_id() if given is None else check_batch_id(given)  # '' too
        expires_in = options.expires_in_s
        self.expires_ms = now_ms() + int(expires_in * 1000) if expires_in else 0
        self._opened = False  # the batch's record is written with its first chunk
        self._spent = 0  # tokens of the jobs written so far

    def submit(self, source: Source, progress: Callable[[int], None] | None = None) -> Submission:
        if not isinstance(source, str) and not hasattr(source, "open"):
            source = list(source)  # read twice: once to check, once to submit
        defaults, tally = self.options.defaults, _Tally(self.submitter.check)
        found = scan(source, defaults, tally.check)
        name = str(source) if isinstance(source, str) or hasattr(source, "open") else "batch"
        if found.valid == 0 and not found.rejects:
            raise InvalidBatch(f"{name}: no jobs in it (it is empty)", [])
        if found.rejects and not self.options.skip_invalid:
            raise InvalidBatch(describe_rejects(name, found.rejects), _pairs(found.rejects))
        if found.valid == 0:
            raise InvalidBatch(f"{name}: every line is invalid; nothing was submitted", [])
        admission = self._admit(found.valid, tally.tokens)
        try:
            return self._submit_lines(
                valid_lines(source, defaults, found.rejected_lines), found, progress
            )
        finally:  # tokens of jobs not queued (already in the batch, or a failure) go back
            self._refund(admission, tally.tokens - self._spent)

    def _submit_lines(
        self, lines: Iterable[BatchLine], found: Scan, progress: Callable[[int], None] | None
    ) -> Submission:
        created = existing = 0
        for chunk in _chunks(lines, SUBMIT_CHUNK, first=FIRST_CHUNK):
            made = self._submit_chunk(chunk)
            created, existing = created + made, existing + len(chunk) - made
            if progress is not None:
                progress(created + existing)
        return Submission(created, existing, found.rejects)

    def _admit(self, jobs: int, tokens: int) -> Admission:
        """Hold the whole batch to its tenant's quotas before any job of it is queued."""
        admission = self.submitter.batch_admission(self.options.tenant, jobs, tokens)
        with redis_errors(self.submitter.settings):
            take = admission.check(run(self.redis, admission.read))
            if take is not None:
                admission.took(run(self.redis, take))
        return admission

    def _refund(self, admission: Admission, tokens: int) -> None:
        refund = admission.refund(tokens)
        if refund is not None:
            with suppress(GenqError), redis_errors(self.submitter.settings):
                run(self.redis, refund)

    def _write(self, jobs: list[NewJob]) -> set[str]:
        """Run SUBMIT for a chunk; the first chunk opens the batch's record in the same
        transaction, so that a batch exists only once a job of it does. Returns the job ids
        created."""
        submitter = self.submitter
        opening = None
        if not self._opened:
            options = self.options
            opening = Opening(now_ms(), options.priority, self.expires_ms, options.tenant)
        command = batch_store.submit(
            submitter.keys, self.batch_id, jobs, submitter.settings.job_ttl_s, opening
        )
        created: set[str] | None = run_transaction(self.redis, [command])[0]
        if created is None:
            raise InvalidBatch(
                f"batch {self.batch_id} was cancelled: it takes no new jobs "
                "(submit under another batch id)",
                [],
            )
        self._opened = True
        return created

    def _submit_chunk(self, chunk: list[BatchLine]) -> int:
        """Write the chunk's new jobs, dispatch them (and any earlier job of the batch whose
        dispatch was interrupted), then mark them dispatched. Returns the jobs created."""
        jobs = [self._prepare(line) for line in chunk]
        with redis_errors(self.submitter.settings):
            created = self._write([NewJob(cid, job.job_id, job.record) for cid, job in jobs])
            self._spent += sum(
                job_cost(job.record.spec) for _, job in jobs if job.job_id in created
            )
            pending = [job for _, job in jobs if job.job_id in created]
            if len(created) < len(jobs):
                pending += self._undispatched(
                    [cid for cid, job in jobs if job.job_id not in created]
                )
        self._dispatch(pending)
        return len(created)

    def _prepare(self, line: BatchLine) -> tuple[str, PreparedJob]:
        job = self.submitter.prepare(line.spec, {})
        record = job.record.model_copy(
            update={
                "batch_id": self.batch_id,
                "custom_id": line.custom_id,
                "priority": self.options.priority,
                "tenant": self.options.tenant,
                "expires_ms": self.expires_ms,
                "dispatched": False,
            }
        )
        return line.custom_id, PreparedJob(job.job_id, record)

    def _undispatched(self, custom_ids: list[str]) -> list[PreparedJob]:
        """Jobs of an earlier submission of this batch that were written but whose dispatch
        did not complete (the submitter died): dispatched again. A second message for a job is
        harmless: only one attempt can claim it."""
        keys = self.submitter.keys
        job_ids = run(self.redis, batch_store.job_ids_of(keys, self.batch_id, custom_ids))
        records = run(self.redis, job_store.read_many(keys, job_ids))
        return [
            PreparedJob(job_id, record)
            for job_id, record in zip(job_ids, records, strict=True)
            if record and not record.dispatched and record.state == JobState.QUEUED
        ]

    def _dispatch(self, jobs: list[PreparedJob]) -> None:
        if not jobs:
            return
        submitter = self.submitter
        settings = submitter.settings
        # Not queued (RedisUnavailable): a resubmission with this batch id resumes.
        submitter.send(dispatches(jobs, settings.bundle_tokens, settings.bundle_jobs))
        job_ids = [job.job_id for job in jobs]
        ops = [job_store.mark_dispatched(submitter.keys, job_ids), *submitter.replica_wait()]
        with redis_errors(settings):
            replies = run_all(self.redis, ops)
        submitter.replicated(job_ids, replies)


class _Tally:
    """Adds up the cost of the lines a check accepts (see producer/quotas.py)."""

    def __init__(self, check: Callable[[JobSpec], None]) -> None:
        self._check, self.tokens = check, 0

    def check(self, spec: JobSpec) -> None:
        self._check(spec)
        self.tokens += job_cost(spec)


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
