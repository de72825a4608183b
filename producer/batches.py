"""Batches: many jobs submitted as one, watched, read back in input order and cancelled as one.

    with Client() as client:
        batch = client.submit_batch("prompts.jsonl", defaults={"max_tokens": 64})
        batch.wait(progress=lambda s: print(f"{s.ended}/{s.total}"))
        for line in batch.results():
            print(line.custom_id, line.status, line.text)

A batch's jobs are ordinary jobs (each has a job id, a record and a stream) that also belong
to the batch: `genq:batch:{id}` counts them by state, `...:jobs` lists them in input order, and
`...:ids` maps each custom_id to its job, which makes resubmitting a batch idempotent.

`BatchHandle` and `AsyncBatchHandle` are the sync and async faces of one batch, over the I/O-free
`_Waiting` and `_ResultPage`. They wait on Redis, not on a clock: the FINISH script publishes
each ending job's id on the batch's `...:ended` channel, a waiter subscribes before it reads,
and reads again when woken. A notification it could not hear (a job failed by the reaper, a
reconnect) costs it one bounded wait (`poll_s`), never a hang.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Protocol, Self, TypeVar

import redis
import redis.asyncio

from genq.common.connection import redis_errors
from genq.common.errors import InvalidBatch, InvalidJob, StreamTimeout
from genq.common.ids import check_batch_id, new_batch_id
from genq.common.lifecycle import now_ms
from genq.common.schemas import DEFAULT_PRIORITY, BatchStatus, JobState, ResultLine
from genq.common.settings import Settings
from genq.common.store import Command, arun, channels, run, run_transaction
from genq.common.store import batches as batch_store
from genq.common.store import jobs as job_store
from genq.common.store.batches import NewJob, Opening, result_line
from genq.common.store.keys import Keys
from genq.producer.batchfile import BatchLine, Reject, Source, scan, valid_lines
from genq.producer.bundles import dispatches
from genq.producer.core import PreparedJob
from genq.producer.retry import retrying, retrying_async
from genq.producer.submitter import CancelReport, Submitter

SUBMIT_CHUNK = 500  # jobs written and dispatched per round
FIRST_CHUNK = 50  # smaller, so that workers start while the rest is written
PAGE = 500  # jobs read per round when reading results or cancelling
POLL_S = 1.0  # longest wait for a job's ending to be announced before the batch is read again
SHOWN_REJECTS = 20

log = logging.getLogger("genq.client")

H = TypeVar("H")  # a client's job handle: JobHandle, AsyncJobHandle
H_co = TypeVar("H_co", covariant=True)


class BatchClient(Protocol[H_co]):
    """What a BatchHandle uses of its client (`genq.producer.Client`), named here so that the
    batches do not import the client, which imports them."""

    @property
    def keys(self) -> Keys: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def redis(self) -> redis.Redis: ...
    @property
    def submitter(self) -> Submitter: ...
    def job(self, job_id: str, check: bool = True) -> H_co: ...


class AsyncBatchClient(Protocol[H_co]):
    """What an AsyncBatchHandle uses of its client (`genq.producer.AsyncClient`)."""

    @property
    def keys(self) -> Keys: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def redis(self) -> redis.asyncio.Redis: ...
    @property
    def submitter(self) -> Submitter: ...
    async def job(self, job_id: str, check: bool = True) -> H_co: ...


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

    def submit(self, source: Source, progress: Callable[[int], None] | None = None) -> Submission:
        if not isinstance(source, str) and not hasattr(source, "open"):
            source = list(source)  # read twice: once to check, once to submit
        defaults = self.options.defaults
        found = scan(source, defaults, self.submitter.check)
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

    def _write(self, jobs: list[NewJob]) -> set[str]:
        """Run SUBMIT for a chunk; the first chunk opens the batch's record in the same
        transaction, so that a batch exists only once a job of it does. Returns the job ids
        created."""
        submitter = self.submitter
        opening = None
        if not self._opened:
            opening = Opening(now_ms(), self.options.priority, self.expires_ms)
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
        with redis_errors(settings):
            run(self.redis, job_store.mark_dispatched(submitter.keys, [job.job_id for job in jobs]))


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


class _Waiting:
    """One `wait()` without I/O: its deadline, its progress callback, the bounded wait for the
    next announcement, and the timeout error."""

    def __init__(
        self,
        batch_id: str,
        timeout: float | None,
        progress: Callable[[BatchStatus], None] | None,
        poll_s: float,
    ) -> None:
        self.batch_id, self.progress, self.poll_s = batch_id, progress, poll_s
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def over(self, status: BatchStatus) -> bool:
        """True once every job ended; StreamTimeout when the deadline passed first."""
        if self.progress is not None:
            self.progress(status)
        if status.complete:
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise StreamTimeout(
                f"batch {self.batch_id}: {status.ended} of {status.total} jobs ended "
                "within the timeout"
            )
        return False

    def wait_s(self) -> float:
        if self.deadline is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, self.deadline - time.monotonic()))


class _ResultPage:
    """One page of a batch's job ids on their way to results lines, without I/O. After an
    announcement only the announced jobs at the head of the page are read (each job's fields
    are read about once, however large the batch); after a quiet bounded wait, the whole rest
    of the page is, in case an ending went unheard."""

    def __init__(self, job_ids: list[str]) -> None:
        self.pending = job_ids
        self.heard: set[str] = set()
        self.quiet = True  # nothing announced since the last read: read the whole rest

    def to_read(self) -> list[str]:
        if self.quiet:
            return self.pending
        head: list[str] = []
        for job_id in self.pending:
            if job_id not in self.heard:
                break
            head.append(job_id)
        return head

    def take(self, job_ids: list[str], rows: Sequence[Any]) -> list[ResultLine]:
        """The lines of the jobs read that ended, up to the first one that has not."""
        lines = []
        for job_id, values in zip(job_ids, rows, strict=True):
            line = result_line(job_id, values)
            if line is None:
                break
            lines.append(line)
        self.pending = self.pending[len(lines) :]
        return lines

    def hear(self, job_ids: set[str]) -> None:
        self.heard |= job_ids
        self.quiet = not job_ids


class _Listener:
    """The batch's ended channel (see store/batches.py), subscribed to before the batch is
    read, so that an ending between the read and the wait still wakes the wait. If Redis
    refuses the subscription, waits fall back to the bounded wait alone."""

    def __init__(self, client: redis.Redis, channel: str, enabled: bool = True) -> None:
        self._client, self._channel, self._enabled = client, channel, enabled
        self._pubsub: channels.Subscription | None = None

    def __enter__(self) -> Self:
        if self._enabled:  # a reader that will not wait needs no subscription
            self._subscribe()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pubsub is not None:
            self._pubsub.close()

    def _subscribe(self) -> None:
        try:
            self._pubsub = channels.subscribe(self._client, self._channel)
        except redis.RedisError as exc:  # the caller's next read retries or reports it
            log.debug("no announcements from %s: %s", self._channel, exc)
            self._pubsub = None

    def wait(self, timeout_s: float) -> set[str]:
        """The ids of the jobs announced within `timeout_s` (empty when none was)."""
        if self._pubsub is None:
            self._subscribe()  # after a lost connection: endings meanwhile need a full read
            if self._pubsub is None:
                time.sleep(timeout_s)
            return set()
        try:
            return _drain(self._pubsub, timeout_s)
        except redis.RedisError:
            self._pubsub.close()
            self._pubsub = None
            return set()


def _drain(pubsub: channels.Subscription, timeout_s: float) -> set[str]:
    heard: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while not heard:
        left = deadline - time.monotonic()
        message = pubsub.message(max(left, 0.0))
        if message is not None:
            heard.add(message)
        elif left <= 0:
            return heard
    while (message := pubsub.message(0.0)) is not None:
        heard.add(message)
    return heard


class _AsyncListener:
    """The async face of _Listener."""

    def __init__(self, client: redis.asyncio.Redis, channel: str, enabled: bool = True) -> None:
        self._client, self._channel, self._enabled = client, channel, enabled
        self._pubsub: channels.AsyncSubscription | None = None

    async def __aenter__(self) -> Self:
        if self._enabled:
            await self._subscribe()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pubsub is not None:
            await self._pubsub.aclose()

    async def _subscribe(self) -> None:
        try:
            self._pubsub = await channels.asubscribe(self._client, self._channel)
        except redis.RedisError as exc:
            log.debug("no announcements from %s: %s", self._channel, exc)
            self._pubsub = None

    async def wait(self, timeout_s: float) -> set[str]:
        if self._pubsub is None:
            await self._subscribe()
            if self._pubsub is None:
                await asyncio.sleep(timeout_s)
            return set()
        try:
            return await _drain_async(self._pubsub, timeout_s)
        except redis.RedisError:
            await self._pubsub.aclose()
            self._pubsub = None
            return set()


async def _drain_async(pubsub: channels.AsyncSubscription, timeout_s: float) -> set[str]:
    heard: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while not heard:
        left = deadline - time.monotonic()
        message = await pubsub.message(max(left, 0.0))
        if message is not None:
            heard.add(message)
        elif left <= 0:
            return heard
    while (message := await pubsub.message(0.0)) is not None:
        heard.add(message)
    return heard


class _BatchView:
    """What the sync and async batch handles share: the batch, what its submission did, and
    the reading of its record."""

    def __init__(self, keys: Keys, batch_id: str, submission: Submission | None) -> None:
        self.batch_id = batch_id
        self.submission = submission or Submission()
        self._keys = keys

    @property
    def rejects(self) -> list[Reject]:
        """The lines the submission rejected (with `skip_invalid`)."""
        return self.submission.rejects

    def _status(self, status: BatchStatus | None) -> BatchStatus:
        if status is None:
            raise InvalidJob(
                f"no batch {self.batch_id} (never submitted, or its retention has passed)"
            )
        return status

    def _status_read(self) -> Command[BatchStatus | None]:
        return batch_store.status(self._keys, self.batch_id)

    def _page_read(self, start: int) -> Command[list[str]]:
        return batch_store.job_ids(self._keys, self.batch_id, start, PAGE)

    def _channel(self) -> str:
        return batch_store.ended_channel(self._keys, self.batch_id)


class BatchHandle(_BatchView, Generic[H]):
    """A batch: `status()`, `wait()`, `results()` in input order, `cancel()`, and its `jobs()`.
    After a submission, `submission` says what it created and what it rejected."""

    def __init__(
        self, client: BatchClient[H], batch_id: str, submission: Submission | None = None
    ) -> None:
        super().__init__(client.keys, batch_id, submission)
        self._client = client

    def status(self) -> BatchStatus:
        """The batch's counts by state; a lost Redis connection is retried (GENQ_REDIS_RETRY_S)."""
        r, read = self._client.redis, self._status_read()
        return self._status(retrying(self._client.settings, lambda: run(r, read)))

    def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[BatchStatus], None] | None = None,
        poll_s: float = POLL_S,
    ) -> BatchStatus:
        """Wait until every job ended; `progress` gets each status read meanwhile (one per
        announced ending, or per `poll_s` without one). Raises StreamTimeout when `timeout`
        passes first."""
        waiting = _Waiting(self.batch_id, timeout, progress, poll_s)
        with self._listen() as listener:
            while not waiting.over(status := self.status()):
                listener.wait(waiting.wait_s())
        return status

    def _listen(self, enabled: bool = True) -> _Listener:
        return _Listener(self._client.redis, self._channel(), enabled)

    def _pages(self) -> Iterator[list[str]]:
        redis_, settings = self._client.redis, self._client.settings
        start = 0
        while True:
            page = retrying(settings, partial(run, redis_, self._page_read(start)))
            if page:
                yield page
            if len(page) < PAGE:
                return
            start += PAGE

    def job_ids(self) -> Iterator[str]:
        """The batch's job ids in input order, read a page at a time."""
        for page in self._pages():
            yield from page

    def jobs(self) -> Iterator[H]:
        """A handle on each job, in input order, to stream it (see Client.stream_many)."""
        for job_id in self.job_ids():
            yield self._client.job(job_id, check=False)

    def results(self, wait: bool = True, poll_s: float = POLL_S) -> Iterator[ResultLine]:
        """One line per job in input order, each as soon as its job (and those before it)
        ended. With wait=False, stops at the first job that has not ended. A lost Redis
        connection is retried (GENQ_REDIS_RETRY_S), and no line is repeated or left out."""
        with self._listen(enabled=wait) as listener:
            for page in self._pages():
                results = _ResultPage(page)
                while results.pending:
                    yield from self._read(results)
                    if results.pending and not wait:
                        return
                    if results.pending:
                        results.hear(listener.wait(poll_s))

    def _read(self, results: _ResultPage) -> list[ResultLine]:
        job_ids = results.to_read()
        if not job_ids:
            return []

        r, read = self._client.redis, batch_store.result_fields(self._keys, job_ids)
        return results.take(job_ids, retrying(self._client.settings, lambda: run(r, read)))

    def cancel(self) -> CancelReport:
        """Cancel every job of the batch: queued ones never start, running ones stop within a
        chunk and keep their partial text, ended ones keep their results."""
        client = self._client
        with redis_errors(client.settings):
            run(client.redis, batch_store.request_cancel(self._keys, self.batch_id))
        report = CancelReport(0, 0, 0)
        for page in self._pages():
            report = report + client.submitter.cancel(client.redis, page)
        return report


class AsyncBatchHandle(_BatchView, Generic[H]):
    """The async face of BatchHandle: `await batch.wait()`, `async for line in
    batch.results()`, `await batch.cancel()`; the same methods, the same answers."""

    def __init__(
        self, client: AsyncBatchClient[H], batch_id: str, submission: Submission | None = None
    ) -> None:
        super().__init__(client.keys, batch_id, submission)
        self._client = client

    async def status(self) -> BatchStatus:
        """The batch's counts by state (see BatchHandle.status)."""
        r, read = self._client.redis, self._status_read()
        return self._status(await retrying_async(self._client.settings, lambda: arun(r, read)))

    async def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[BatchStatus], None] | None = None,
        poll_s: float = POLL_S,
    ) -> BatchStatus:
        """Wait until every job ended (see BatchHandle.wait)."""
        waiting = _Waiting(self.batch_id, timeout, progress, poll_s)
        async with self._listen() as listener:
            while not waiting.over(status := await self.status()):
                await listener.wait(waiting.wait_s())
        return status

    def _listen(self, enabled: bool = True) -> _AsyncListener:
        return _AsyncListener(self._client.redis, self._channel(), enabled)

    async def _pages(self) -> AsyncIterator[list[str]]:
        redis_, settings = self._client.redis, self._client.settings
        start = 0
        while True:
            page = await retrying_async(settings, partial(arun, redis_, self._page_read(start)))
            if page:
                yield page
            if len(page) < PAGE:
                return
            start += PAGE

    async def job_ids(self) -> AsyncIterator[str]:
        """The batch's job ids in input order, read a page at a time."""
        async for page in self._pages():
            for job_id in page:
                yield job_id

    async def jobs(self) -> AsyncIterator[H]:
        """A handle on each job, in input order (see AsyncClient.stream_many)."""
        async for job_id in self.job_ids():
            yield await self._client.job(job_id, check=False)

    async def results(self, wait: bool = True, poll_s: float = POLL_S) -> AsyncIterator[ResultLine]:
        """One line per job in input order (see BatchHandle.results)."""
        async with self._listen(enabled=wait) as listener:
            async for page in self._pages():
                results = _ResultPage(page)
                while results.pending:
                    for line in await self._read(results):
                        yield line
                    if results.pending and not wait:
                        return
                    if results.pending:
                        results.hear(await listener.wait(poll_s))

    async def _read(self, results: _ResultPage) -> list[ResultLine]:
        job_ids = results.to_read()
        if not job_ids:
            return []

        r, read = self._client.redis, batch_store.result_fields(self._keys, job_ids)
        rows = await retrying_async(self._client.settings, lambda: arun(r, read))
        return results.take(job_ids, rows)

    async def cancel(self) -> CancelReport:
        """Cancel every job of the batch (see BatchHandle.cancel)."""
        client = self._client
        with redis_errors(client.settings):
            await arun(client.redis, batch_store.request_cancel(self._keys, self.batch_id))
        report = CancelReport(0, 0, 0)
        async for page in self._pages():
            report = report + await client.submitter.acancel(client.redis, page)
        return report
