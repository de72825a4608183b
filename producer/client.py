"""The Python API: `Client` and `AsyncClient`, parallel classes over one shared core: the
same methods, the same arguments and the same answers, `await`ed on the async side (a unit
test holds them to it).

    with Client() as client:
        job = client.submit("Once upon a time", model="tiny", max_tokens=64)
        with job.stream() as stream:
            for frame in stream:
                if frame.type == "token":
                    print(frame.data.text, end="", flush=True)
        print(stream.result.usage)

The faces are thin: what a job goes through lives in the I/O-free core (producer/core.py,
producer/reading.py, producer/submitter.py), a face says which store command to run
(producer/transport.py) and what to do with the answer. A client hands out job handles
(producer/handles.py), which open streams (producer/streams.py), and batch handles
(producer/batches.py). tests/unit/test_faces.py keeps every sync/async pair of methods within
10 lines.

A client's Redis connections are a blocking pool of `pool_size` (POOL_SIZE): each stream read
at once holds one; past that, a command waits for one (genq.common.connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import suppress
from typing import Any, Self

import redis
import redis.asyncio

from genq.common.connection import POOL_SIZE, connect, connect_async, redis_errors
from genq.common.errors import GenqError, InvalidJob
from genq.common.frames import Frame
from genq.common.ids import check_batch_id, check_job_id, is_job_id
from genq.common.presence import live_workers, live_workers_async
from genq.common.registry import ModelRegistry
from genq.common.schemas import DEFAULT_PRIORITY, JobRecord, JobSpec, WorkerInfo
from genq.common.settings import Settings
from genq.common.store import Command, arun_transaction, fair, jobs, leases, run_transaction
from genq.common.store.keys import Keys
from genq.common.tenants import DEFAULT_TENANT
from genq.producer.batches import AsyncBatchHandle, BatchHandle
from genq.producer.batchfile import Source
from genq.producer.core import Placement, PreparedJob
from genq.producer.handles import AsyncJobHandle, JobHandle
from genq.producer.quotas import Admission
from genq.producer.reading import Merge
from genq.producer.streams import AsyncJobStream, JobStream
from genq.producer.submission import BatchOptions, BatchSubmitter
from genq.producer.submitter import CancelReport, Submitter
from genq.producer.transport import AsyncTransport, Transport

STOP = True  # what an `on_chunk` callback returns to stop its job (any true value does)


class _BaseClient:
    """Settings, registry, and the submitter that checks, dispatches and cancels jobs (see
    producer/submitter.py); no Redis I/O of its own."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.keys = Keys(self.settings.key_prefix)
        self.registry = ModelRegistry.from_settings(self.settings)
        self.submitter = Submitter(self.settings, self.registry)

    def _write_ops(self, job: PreparedJob) -> list[Command[Any]]:
        """The commands that store a new job's record (one transaction, of either face)."""
        record, ttl_s = job.record, self.settings.job_ttl_s
        ops: list[Command[Any]] = [
            jobs.write(self.keys, job.job_id, record, ttl_s),
            fair.enter(self.keys, job.job_id, record),  # its fair share: genq.common.store.fair
        ]
        if record.expires_ms:
            ops.append(leases.add_expiry(self.keys, job.job_id, record.expires_ms))
        return ops

    def _unwrite_ops(self, job: PreparedJob) -> list[Command[Any]]:
        """What `_write_ops` stored, removed: the job was not queued."""
        return [jobs.delete(self.keys, job.job_id), fair.forget(self.keys, job.job_id, job.record)]

    def _batch_submitter(
        self, connection: redis.Redis, batch_id: str | None, place: Placement, **options: Any
    ) -> BatchSubmitter:
        """A batch's submission, checked and placed as a job's is (see Client.submit_batch)."""
        batch_options = BatchOptions(
            batch_id, place.priority, place.expires_in_s, tenant=place.tenant, **options
        )
        return BatchSubmitter(self.submitter, batch_options, connection)


def _no_job(job_id: str) -> InvalidJob:
    return InvalidJob(f"no job {job_id} (never submitted, or its retention has passed)")


class Client(_BaseClient):
    def __init__(self, settings: Settings | None = None, pool_size: int = POOL_SIZE) -> None:
        super().__init__(settings)
        self.redis: redis.Redis = connect(self.settings, pool_size)
        self.transport = Transport(self.redis, self.settings)

    def submit(
        self,
        prompt: str | JobSpec | None = None,
        /,
        *,
        priority: int = DEFAULT_PRIORITY,
        expires_in: float | None = None,
        tenant: str = DEFAULT_TENANT,
        **fields: Any,
    ) -> JobHandle:
        """Validate and queue a job. `priority` 0-9 (9 is served first); `expires_in` seconds
        after which a job not started yet ends as `expired`; `tenant` whose job it is (its fair
        share and quotas). Raises InvalidJob (nothing
        queued), QueueFull or QuotaExceeded (nothing queued; retryable) or RedisUnavailable."""
        submitted = time.monotonic()
        job = self.submitter.prepare(prompt, fields, Placement(priority, expires_in, tenant))
        self._queue(job, self._admit(job))
        self._confirm(job)
        return JobHandle(self, job.job_id, submitted)

    def _admit(self, job: PreparedJob) -> Admission:
        """Hold the job to its model's ceiling and its tenant's quotas (producer/quotas.py)."""
        admission = self.submitter.admission(job)
        take = admission.check(self.transport.read(admission.read))
        if take is not None:
            admission.took(self.transport.call(take))
        return admission

    def _queue(self, job: PreparedJob, admission: Admission) -> None:
        """Write the job and send its task message; not queued, its tokens go back."""
        try:
            self._write(job)
            self._dispatch(job)
        except BaseException:
            if (refund := admission.refund()) is not None:
                with suppress(GenqError):  # the submit's own error is the one to raise
                    self.transport.call(refund)
            raise

    def _write(self, job: PreparedJob) -> None:
        with redis_errors(self.settings):
            run_transaction(self.redis, self._write_ops(job))

    def _dispatch(self, job: PreparedJob) -> None:
        try:
            self.submitter.dispatch(job)
        except Exception:  # not queued: leave no record behind
            self.transport.call_all(self._unwrite_ops(job))
            raise

    def _confirm(self, job: PreparedJob) -> None:
        ids = [job.job_id]
        if ops := self.submitter.confirm_ops(ids):
            self.submitter.replicated(ids, self.transport.call_all(ops))

    def job(self, job_id: str, check: bool = True) -> JobHandle:
        """A handle on a job submitted earlier (by any process), while its record is kept."""
        check_job_id(job_id)
        if check and not self.transport.read(jobs.exists(self.keys, job_id)):
            raise _no_job(job_id)
        return JobHandle(self, job_id)

    def record(self, job_id: str) -> JobRecord:
        """A job's record (state, attempts, worker, timestamps, result): InvalidJob when no
        such job is kept, InvalidEntry when its record is not one genq wrote."""
        record = self.transport.read(jobs.read(self.keys, check_job_id(job_id)))
        if record is None:
            raise _no_job(job_id)
        return record

    def submit_batch(
        self,
        source: Source,
        *,
        batch_id: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        expires_in: float | None = None,
        tenant: str = DEFAULT_TENANT,
        defaults: dict[str, Any] | None = None,
        skip_invalid: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> BatchHandle[JobHandle]:
        """Submit a batch: a JSONL file's path, or lines (JSON text or dicts), each a genq job
        or an OpenAI batch request with a `custom_id`. Every line is checked first: a bad one
        raises InvalidBatch naming each bad line, and nothing is submitted, unless
        `skip_invalid` (then the handle's `rejects` lists them). Submitting again with the same
        `batch_id` adds only the custom_ids the batch does not have."""
        place = Placement(priority, expires_in, tenant)  # checks them before anything is read
        submitter = self._batch_submitter(
            self.redis, batch_id, place, defaults=defaults or {}, skip_invalid=skip_invalid
        )
        submission = submitter.submit(source, progress)
        return BatchHandle(self, submitter.batch_id, submission)

    def batch(self, batch_id: str) -> BatchHandle[JobHandle]:
        """A handle on a batch submitted earlier; InvalidJob when there is none."""
        handle = BatchHandle(self, check_batch_id(batch_id))
        handle.status()
        return handle

    def cancel(self, job_or_batch_id: str) -> CancelReport:
        """Cancel a job or every job of a batch (see JobHandle.cancel)."""
        job_id = job_or_batch_id
        if is_job_id(job_id) and self.transport.call(jobs.exists(self.keys, job_id)):
            return self.submitter.cancel(self.redis, [job_id])
        return self.batch(job_or_batch_id).cancel()

    def stream_many(
        self, jobs: Iterable[JobHandle], timeout: float | None = None
    ) -> Iterator[tuple[JobHandle, Frame]]:
        """Read several jobs' frames at once, as they arrive, tagged by job: one blocking read
        covers every job still running. Each handle's `text` and `result()` work afterwards."""
        merge = Merge({job.job_id: (job, job.stream(timeout=timeout)) for job in jobs})
        while merge.streams:
            for job, stream, frame in merge.ready():
                stream.mend()
                yield job, frame
            if merge.streams:
                self._fill_many(merge)

    def _fill_many(self, merge: Merge[JobHandle, JobStream]) -> None:
        for core in merge.take(self.transport.read(merge.read())):
            core.after_idle(self.transport.read(core.record_fields))  # ended unseen?

    def workers(self) -> list[WorkerInfo]:
        """The running workers, by name: each one's device class, models and queues."""
        with redis_errors(self.settings):
            return live_workers(self.redis, self.keys)

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_BaseClient):
    def __init__(self, settings: Settings | None = None, pool_size: int = POOL_SIZE) -> None:
        super().__init__(settings)
        self.redis: redis.asyncio.Redis = connect_async(self.settings, pool_size)
        self.transport = AsyncTransport(self.redis, self.settings)
        self._submit_redis: redis.Redis | None = None  # made by the first submit_batch

    async def submit(
        self,
        prompt: str | JobSpec | None = None,
        /,
        *,
        priority: int = DEFAULT_PRIORITY,
        expires_in: float | None = None,
        tenant: str = DEFAULT_TENANT,
        **fields: Any,
    ) -> AsyncJobHandle:
        submitted, place = time.monotonic(), Placement(priority, expires_in, tenant)
        # Checking renders the prompt and may load a vocabulary and tokenize: not on the loop.
        job = await asyncio.to_thread(self.submitter.prepare, prompt, fields, place)
        await self._queue(job, await self._admit(job))
        await self._confirm(job)
        return AsyncJobHandle(self, job.job_id, submitted)

    async def _admit(self, job: PreparedJob) -> Admission:
        admission = self.submitter.admission(job)
        take = admission.check(await self.transport.read(admission.read))
        if take is not None:
            admission.took(await self.transport.call(take))
        return admission

    async def _queue(self, job: PreparedJob, admission: Admission) -> None:
        try:
            await self._write(job)
            await self._dispatch(job)
        except BaseException:
            if (refund := admission.refund()) is not None:
                with suppress(GenqError):
                    await self.transport.call(refund)
            raise

    async def _write(self, job: PreparedJob) -> None:
        with redis_errors(self.settings):
            await arun_transaction(self.redis, self._write_ops(job))

    async def _dispatch(self, job: PreparedJob) -> None:
        try:
            # kombu publishes synchronously; a thread keeps the event loop free meanwhile.
            await asyncio.to_thread(self.submitter.dispatch, job)
        except Exception:  # not queued: leave no record behind
            await self.transport.call_all(self._unwrite_ops(job))
            raise

    async def _confirm(self, job: PreparedJob) -> None:
        ids = [job.job_id]
        if ops := self.submitter.confirm_ops(ids):
            self.submitter.replicated(ids, await self.transport.call_all(ops))

    async def job(self, job_id: str, check: bool = True) -> AsyncJobHandle:
        """A handle on a job submitted earlier (see Client.job)."""
        check_job_id(job_id)
        if check and not await self.transport.read(jobs.exists(self.keys, job_id)):
            raise _no_job(job_id)
        return AsyncJobHandle(self, job_id)

    async def record(self, job_id: str) -> JobRecord:
        """The async face of Client.record."""
        record = await self.transport.read(jobs.read(self.keys, check_job_id(job_id)))
        if record is None:
            raise _no_job(job_id)
        return record

    async def submit_batch(
        self,
        source: Source,
        *,
        batch_id: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        expires_in: float | None = None,
        tenant: str = DEFAULT_TENANT,
        defaults: dict[str, Any] | None = None,
        skip_invalid: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> AsyncBatchHandle[AsyncJobHandle]:
        """Submit a batch (see Client.submit_batch). The submission is Client's own, run in a
        thread (reading the source and publishing to the broker block), so that the event
        loop stays free; `progress` is called on the event loop."""
        place = Placement(priority, expires_in, tenant)
        submitter = self._batch_submitter(
            self._sync_redis(), batch_id, place, defaults=defaults or {}, skip_invalid=skip_invalid
        )
        submission = await asyncio.to_thread(submitter.submit, source, _on_loop(progress))
        return AsyncBatchHandle(self, submitter.batch_id, submission)

    def _sync_redis(self) -> redis.Redis:
        if self._submit_redis is None:
            self._submit_redis = connect(self.settings)
        return self._submit_redis

    async def batch(self, batch_id: str) -> AsyncBatchHandle[AsyncJobHandle]:
        """A handle on a batch submitted earlier; InvalidJob when there is none."""
        handle = AsyncBatchHandle(self, check_batch_id(batch_id))
        await handle.status()
        return handle

    async def cancel(self, job_or_batch_id: str) -> CancelReport:
        """Cancel a job or every job of a batch (see Client.cancel)."""
        job_id = job_or_batch_id
        if is_job_id(job_id) and await self.transport.call(jobs.exists(self.keys, job_id)):
            return await self.submitter.acancel(self.redis, [job_id])
        batch = await self.batch(job_or_batch_id)
        return await batch.cancel()

    async def stream_many(
        self, jobs: Iterable[AsyncJobHandle], timeout: float | None = None
    ) -> AsyncIterator[tuple[AsyncJobHandle, Frame]]:
        """Several jobs' frames as they arrive, tagged by job (see Client.stream_many: the
        same algorithm, one blocking read for every job still running)."""
        merge = Merge({job.job_id: (job, job.stream(timeout=timeout)) for job in jobs})
        while merge.streams:
            for job, stream, frame in merge.ready():
                await stream.mend()
                yield job, frame
            if merge.streams:
                await self._fill_many(merge)

    async def _fill_many(self, merge: Merge[AsyncJobHandle, AsyncJobStream]) -> None:
        for core in merge.take(await self.transport.read(merge.read())):
            core.after_idle(await self.transport.read(core.record_fields))

    async def workers(self) -> list[WorkerInfo]:
        with redis_errors(self.settings):
            return await live_workers_async(self.redis, self.keys)

    async def aclose(self) -> None:
        await self.redis.aclose()
        if self._submit_redis is not None:
            self._submit_redis.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _on_loop(progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """`progress`, called from another thread, run on the running event loop."""
    if progress is None:
        return None
    loop = asyncio.get_running_loop()

    def report(done: int) -> None:
        loop.call_soon_threadsafe(progress, done)

    return report
