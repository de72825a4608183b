"""A job's stream as a reader sees it: `JobStream` and its async face `AsyncJobStream`, over
the I/O-free `StreamCore` (producer/reading.py).

A stream reads the job's durable Redis Stream (written by the relay): it replays from the
start, or from a given entry, then follows until the terminal frame, so it can be opened at any
time while the job's stream is retained, before or after the job ended. Resumed attempts and
frames the relay missed are handled, so `text` always ends as the job's final text. An entry
that does not validate (anything with write rights on Redis can add one) is skipped, logged
and counted in `stats.skipped`, never raised. Reads retry a lost Redis connection for
GENQ_REDIS_RETRY_S (see producer/retry.py) and go on from the last entry seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Self, TypeVar

from genq.common.frames import Frame
from genq.common.schemas import JobResult
from genq.producer.core import StreamState, StreamStats
from genq.producer.reading import StreamCore
from genq.producer.transport import AsyncTransport, Transport

IO = TypeVar("IO", Transport, AsyncTransport)


class StreamView(Generic[IO]):
    """What a reader sees of a stream, the same for the sync and async faces."""

    def __init__(self, io: IO, core: StreamCore, cancel: Callable[[], Any] | None = None) -> None:
        self._io: IO = io
        self.core = core  # the reading, without I/O (stream_many reads several at once)
        self._cancel = cancel  # the job's cancel, for `on_chunk` to ask for

    @property
    def text(self) -> str:
        """Text so far; once the stream is exhausted, the job's final text."""
        return self.core.state.text

    @property
    def result(self) -> JobResult:
        """The result, once the stream is exhausted: ResultNotReady before, JobFailed if the
        job failed."""
        return self.core.state.outcome()

    @property
    def stats(self) -> StreamStats:
        return self.core.state.stats()

    @property
    def done(self) -> bool:
        return self.core.state.done

    @property
    def state(self) -> StreamState:
        """The frames folded so far (see StreamState): what a TextFeed follows."""
        return self.core.state

    def shown_text(self, eager: bool = False) -> str:
        """The text a printer may show now: without `eager`, only text that no resumed attempt
        can take back (see StreamState.shown_text); the whole text once the stream ended."""
        return self.core.state.shown_text(eager)

    def set_timeout(self, timeout: float | None) -> None:
        self.core.set_timeout(timeout)


class JobStream(StreamView[Transport]):
    """One reading of a job's frames: iterate it; `.text` grows as frames arrive; `.result`
    once it is exhausted (ResultNotReady before); `close()` when leaving early. When the
    stream's `on_chunk` returns a true value, the job is cancelled and the stream reads on to
    its end: the result holds the partial text, with finish reason `cancelled`."""

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Frame:
        while not self.core.ended():
            frame = self.core.pop()
            if frame is not None:
                self.mend()
                if self.core.wants_stop(frame) and self._cancel is not None:
                    self._cancel()
                return frame
            self._fill()
        self.close()
        raise StopIteration

    def _fill(self) -> None:
        core = self.core
        if not core.take(self._io.read(core.read())):
            core.after_idle(self._io.read(core.record_fields))

    def mend(self) -> None:
        """After a hole in the frames, the checkpointed windows restore the text (reading the
        stream does it for each frame; stream_many does it for the frames it reads)."""
        read = self.core.mend_read()
        if read is not None:
            self.core.mend(self._io.read(read))

    def close(self) -> None:
        """Stop reading (a client that leaves early); the job itself goes on."""
        self.core.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncJobStream(StreamView[AsyncTransport]):
    """The async face of JobStream: `async for frame in stream`, `await stream.aclose()`."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Frame:
        while not self.core.ended():
            frame = self.core.pop()
            if frame is not None:
                await self.mend()
                if self.core.wants_stop(frame) and self._cancel is not None:
                    await self._cancel()
                return frame
            await self._fill()
        await self.aclose()
        raise StopAsyncIteration

    async def _fill(self) -> None:
        core = self.core
        if not core.take(await self._io.read(core.read())):
            core.after_idle(await self._io.read(core.record_fields))

    async def mend(self) -> None:
        """After a hole in the frames, the checkpointed windows restore the text."""
        read = self.core.mend_read()
        if read is not None:
            self.core.mend(await self._io.read(read))

    async def aclose(self) -> None:
        self.core.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
