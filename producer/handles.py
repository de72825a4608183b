"""A job as its submitter holds it: `JobHandle` and its async face `AsyncJobHandle`. A handle
opens streams on the job (producer/streams.py), waits for its result and cancels it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Generic, Self, TypeVar

from genq.common.keys import Keys
from genq.common.schemas import JobResult
from genq.producer.core import StreamState, StreamStats
from genq.producer.reading import OnChunk, StreamCore
from genq.producer.streams import AsyncJobStream, JobStream
from genq.producer.submitter import CancelReport

if TYPE_CHECKING:
    from genq.producer.client import AsyncClient, Client

C = TypeVar("C", "Client", "AsyncClient")
S = TypeVar("S", JobStream, AsyncJobStream)


class HandleView(Generic[C, S]):
    """What the sync and async job handles share: the job, and its latest stream."""

    def __init__(self, client: C, job_id: str, submitted: float | None = None) -> None:
        self.job_id: str = job_id
        self._client: C = client
        self._keys: Keys = client.keys
        self._submitted = time.monotonic() if submitted is None else submitted
        self._stream: S | None = None

    def stream(
        self,
        from_id: str | None = None,
        timeout: float | None = None,
        on_chunk: OnChunk | None = None,
    ) -> S:
        """Read the job's frames (from the start, or from an entry id such as "0-12").
        `on_chunk(frame)` is called for each token chunk; returning a true value
        (`genq.STOP`) cancels the job, and the stream still ends with its result: the text so
        far, finish reason `cancelled`."""
        core = StreamCore(self.job_id, self._keys, self._submitted, from_id, timeout, on_chunk)
        self._stream = self._open(core)
        return self._stream

    def _open(self, core: StreamCore) -> S:
        raise NotImplementedError

    @property
    def text(self) -> str:
        return self._stream.text if self._stream is not None else ""

    @property
    def stats(self) -> StreamStats:
        return self._stream.stats if self._stream is not None else StreamState(self.job_id).stats()


class JobHandle(HandleView["Client", JobStream]):
    """A job: `stream()` reads its frames, `result()` waits for its result. `text` and `stats`
    are the latest stream's."""

    def _open(self, core: StreamCore) -> JobStream:
        return JobStream(self._client.transport, core, self.cancel)

    def cancel(self) -> CancelReport:
        """Cancel the job: if queued it never starts; if running it stops within a chunk and
        its result keeps the partial text; if ended, nothing changes."""
        return self._client.cancel(self.job_id)

    def result(self, timeout: float | None = None) -> JobResult:
        """Read the job's stream to its end and return the result; JobFailed if it failed."""
        stream = self._stream or self.stream()
        if not stream.done:
            stream.set_timeout(timeout)
            for _ in stream:
                pass
        return stream.result

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncJobHandle(HandleView["AsyncClient", AsyncJobStream]):
    """The async face of JobHandle: `async for frame in job.stream()`, `await job.result()`."""

    def _open(self, core: StreamCore) -> AsyncJobStream:
        return AsyncJobStream(self._client.transport, core, self.cancel)

    async def cancel(self) -> CancelReport:
        """Cancel the job (see JobHandle.cancel)."""
        return await self._client.cancel(self.job_id)

    async def result(self, timeout: float | None = None) -> JobResult:
        stream = self._stream or self.stream()
        if not stream.done:
            stream.set_timeout(timeout)
            async for _ in stream:
                pass
        return stream.result

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
