"""Batches: many jobs submitted as one, watched, read back in input order and cancelled as one.

    with Client() as client:
        batch = client.submit_batch("prompts.jsonl", defaults={"max_tokens": 64})
        batch.wait(progress=lambda s: print(f"{s.ended}/{s.total}"))
        for line in batch.results():
            print(line.custom_id, line.status, line.text)

A batch's jobs are ordinary jobs (each has a job id, a record and a stream) that also belong
to the batch: `genq:batch:{id}` counts them by state, `...:jobs` lists them in input order, and
`...:ids` maps each custom_id to its job, which makes resubmitting a batch idempotent. How a
batch is submitted is producer/submission.py's.

`BatchHandle` and `AsyncBatchHandle` are the sync and async faces of one batch, over the I/O-free
`Waiting` and `ResultPage` (producer/waiting.py). They wait on Redis, not on a clock: the FINISH
script publishes each ending job's id on the batch's `...:ended` channel, a waiter subscribes
before it reads (producer/listeners.py), and reads again when woken. A notification it could
not hear (a job failed by the reaper, a reconnect) costs it one bounded wait (`poll_s`), never a
hang.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic, Protocol, TypeVar

import redis
import redis.asyncio

from genq.common.errors import InvalidJob
from genq.common.keys import Keys
from genq.common.schemas import BatchStatus, ResultLine
from genq.common.store import Command
from genq.common.store import batches as batch_store
from genq.producer.batchfile import Reject
from genq.producer.listeners import AsyncListener, Listener
from genq.producer.submission import Submission
from genq.producer.submitter import CancelReport, Submitter
from genq.producer.transport import AsyncTransport, Transport
from genq.producer.waiting import ResultPage, Waiting

PAGE = 500  # jobs read per round when reading results or cancelling
POLL_S = 1.0  # longest wait for a job's ending to be announced before the batch is read again

H = TypeVar("H")  # a client's job handle: JobHandle, AsyncJobHandle
H_co = TypeVar("H_co", covariant=True)


class BatchClient(Protocol[H_co]):
    """What a BatchHandle uses of its client (`genq.producer.Client`), named here so that the
    batches do not import the client, which imports them."""

    @property
    def keys(self) -> Keys: ...
    @property
    def redis(self) -> redis.Redis: ...
    @property
    def transport(self) -> Transport: ...
    @property
    def submitter(self) -> Submitter: ...
    def job(self, job_id: str, check: bool = True) -> H_co: ...


class AsyncBatchClient(Protocol[H_co]):
    """What an AsyncBatchHandle uses of its client (`genq.producer.AsyncClient`)."""

    @property
    def keys(self) -> Keys: ...
    @property
    def redis(self) -> redis.asyncio.Redis: ...
    @property
    def transport(self) -> AsyncTransport: ...
    @property
    def submitter(self) -> Submitter: ...
    async def job(self, job_id: str, check: bool = True) -> H_co: ...


class _BatchView:
    """What the sync and async batch handles share: the batch, what its submission did, and
    the commands that read its record."""

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

    def _results_read(self, job_ids: list[str]) -> Command[list[list[str | None]]]:
        return batch_store.result_fields(self._keys, job_ids)

    def _cancel_request(self) -> Command[None]:
        return batch_store.request_cancel(self._keys, self.batch_id)

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
        return self._status(self._client.transport.read(self._status_read()))

    def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[BatchStatus], None] | None = None,
        poll_s: float = POLL_S,
    ) -> BatchStatus:
        """Wait until every job ended; `progress` gets each status read meanwhile (one per
        announced ending, or per `poll_s` without one). Raises StreamTimeout when `timeout`
        passes first."""
        waiting = Waiting(self.batch_id, timeout, progress, poll_s)
        with self._listen() as listener:
            while not waiting.over(status := self.status()):
                listener.wait(waiting.wait_s())
        return status

    def _listen(self, enabled: bool = True) -> Listener:
        return Listener(self._client.redis, self._channel(), enabled)

    def _pages(self) -> Iterator[list[str]]:
        start = 0
        while True:
            page = self._client.transport.read(self._page_read(start))
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
                results = ResultPage(page)
                while results.pending:
                    yield from self._read(results)
                    if results.pending and not wait:
                        return
                    if results.pending:
                        results.hear(listener.wait(poll_s))

    def _read(self, results: ResultPage) -> list[ResultLine]:
        job_ids = results.to_read()
        rows = self._client.transport.read(self._results_read(job_ids)) if job_ids else []
        return results.take(job_ids, rows)

    def cancel(self) -> CancelReport:
        """Cancel every job of the batch: queued ones never start, running ones stop within a
        chunk and keep their partial text, ended ones keep their results."""
        client = self._client
        client.transport.call(self._cancel_request())
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
        return self._status(await self._client.transport.read(self._status_read()))

    async def wait(
        self,
        timeout: float | None = None,
        progress: Callable[[BatchStatus], None] | None = None,
        poll_s: float = POLL_S,
    ) -> BatchStatus:
        """Wait until every job ended (see BatchHandle.wait)."""
        waiting = Waiting(self.batch_id, timeout, progress, poll_s)
        async with self._listen() as listener:
            while not waiting.over(status := await self.status()):
                await listener.wait(waiting.wait_s())
        return status

    def _listen(self, enabled: bool = True) -> AsyncListener:
        return AsyncListener(self._client.redis, self._channel(), enabled)

    async def _pages(self) -> AsyncIterator[list[str]]:
        start = 0
        while True:
            page = await self._client.transport.read(self._page_read(start))
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
                results = ResultPage(page)
                while results.pending:
                    for line in await self._read(results):
                        yield line
                    if results.pending and not wait:
                        return
                    if results.pending:
                        results.hear(await listener.wait(poll_s))

    async def _read(self, results: ResultPage) -> list[ResultLine]:
        job_ids = results.to_read()
        rows = await self._client.transport.read(self._results_read(job_ids)) if job_ids else []
        return results.take(job_ids, rows)

    async def cancel(self) -> CancelReport:
        """Cancel every job of the batch (see BatchHandle.cancel)."""
        client = self._client
        await client.transport.call(self._cancel_request())
        report = CancelReport(0, 0, 0)
        async for page in self._pages():
            report = report + await client.submitter.acancel(client.redis, page)
        return report
