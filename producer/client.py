"""The Python API: `Client` and `AsyncClient`, parallel classes over one shared core.

    with Client() as client:
        job = client.submit("Once upon a time", model="tiny", max_tokens=64)
        with job.stream() as stream:
            for frame in stream:
                if frame.type == "token":
                    print(frame.data.text, end="", flush=True)
        print(stream.result.usage)

A stream reads the job's durable Redis Stream (written by the relay): it replays from the
start, or from a given entry, then follows until the terminal frame, so it can be opened at any
time while the job's stream is retained, before or after the job ended. Resumed attempts and
frames the relay missed are handled, so `text` always ends as the job's final text.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any, Generic, Self, TypeVar

import redis
import redis.asyncio

from common.celery_config import GENERATE_TASK, make_celery
from common.connection import connect, connect_async, redis_errors, unavailable
from common.errors import InvalidJob, StreamTimeout
from common.frames import Frame, parse_frame
from common.keys import Keys, check_job_id
from common.prompts import PromptCounter
from common.registry import ModelRegistry
from common.schemas import JobRecord, JobResult, JobSpec
from common.settings import Settings
from producer.core import (
    PreparedJob,
    StreamState,
    StreamStats,
    parse_spec,
    prepare_job,
    terminal_from_record,
)

POLL_S = 1.0  # longest single wait for stream entries; then the job's record is consulted
TERMINAL_GRACE_S = 2.0  # record says ended, stream has no terminal frame yet: wait this long
READ_COUNT = 512  # stream entries per read


class _BaseClient:
    """Settings, registry, validation and task dispatch; no Redis I/O of its own."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.keys = Keys(self.settings.key_prefix)
        self.registry = ModelRegistry.from_settings(self.settings)
        self._prompts = PromptCounter(self.registry)
        self._celery = make_celery(self.settings, main="genq-producer")

    def _prepare(self, prompt: str | JobSpec | None, fields: dict[str, Any]) -> PreparedJob:
        return prepare_job(parse_spec(prompt, fields), self.settings, self.registry, self._prompts)

    def _dispatch(self, job: PreparedJob) -> None:
        request = job.request
        try:
            self._celery.send_task(
                GENERATE_TASK,
                args=[request.model_dump(mode="json")],
                queue=job.record.queue,
                task_id=request.task_id,
            )
        except Exception as exc:  # kombu's errors vary by transport; all mean "not queued"
            raise unavailable(self.settings, exc) from exc


class _StreamCore:
    """What JobStream and AsyncJobStream share, with no I/O: position, deadline, buffered
    frames, and the fallback to the job's record when its stream lacks a terminal frame."""

    def __init__(
        self, job_id: str, keys: Keys, started: float, from_id: str | None, timeout: float | None
    ) -> None:
        self.state = StreamState(job_id, started=started)
        self.stream_key = keys.stream(job_id)
        self.checkpoint_key = keys.checkpoint(job_id)
        self.job_key = keys.job(job_id)
        epoch, seq = _entry_id(from_id or "0-1")
        # Reading starts at `from_id` inclusive (XREAD returns what follows `last_id`), and a
        # reader that starts mid-stream has not missed what it skipped.
        self.last_id = f"{epoch}-{max(seq - 1, 0)}"
        self.state.epoch, self.state.seq = epoch, max(seq - 1, 0)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.buffer: deque[Frame] = deque()
        self.ended_seen_at: float | None = None
        self.closed = False

    def wait_ms(self) -> int:
        if self.deadline is None:
            return int(POLL_S * 1000)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StreamTimeout(f"job {self.state.job_id}: no terminal frame within the timeout")
        return max(1, int(min(left, POLL_S) * 1000))

    def take(self, response: Any) -> bool:
        for _key, entries in response or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                self.buffer.append(parse_frame(fields["f"]))
        return bool(self.buffer)

    def pop(self) -> Frame | None:
        if not self.buffer:
            return None
        frame = self.buffer.popleft()
        self.state.apply(frame)
        return frame

    def after_idle(self, raw_record: dict[str, str]) -> None:
        """No entries for a while: if the record says the job ended and its terminal frame
        still has not come, end with a frame made from the record."""
        if not raw_record:
            return
        record = JobRecord.from_hash(raw_record)
        if not record.state.terminal:
            self.ended_seen_at = None
            return
        now = time.monotonic()
        if self.ended_seen_at is None:
            self.ended_seen_at = now
        elif now - self.ended_seen_at >= TERMINAL_GRACE_S:
            self.buffer.append(terminal_from_record(record, self.state.job_id))


class _StreamView:
    """What a reader sees of a stream, the same for the sync and async faces."""

    _core: _StreamCore

    @property
    def text(self) -> str:
        """Text so far; once the stream is exhausted, the job's final text."""
        return self._core.state.text

    @property
    def result(self) -> JobResult:
        """The result, once the stream is exhausted: ResultNotReady before, JobFailed if the
        job failed."""
        return self._core.state.outcome()

    @property
    def stats(self) -> StreamStats:
        return self._core.state.stats()

    @property
    def done(self) -> bool:
        return self._core.state.done

    def set_timeout(self, timeout: float | None) -> None:
        self._core.deadline = None if timeout is None else time.monotonic() + timeout


S = TypeVar("S", bound=_StreamView)


class JobStream(_StreamView):
    """One reading of a job's frames: iterate it; `.text` grows as frames arrive; `.result`
    once it is exhausted (ResultNotReady before); `close()` when leaving early."""

    def __init__(self, client: redis.Redis, settings: Settings, core: _StreamCore) -> None:
        self._redis, self._settings, self._core = client, settings, core

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Frame:
        core = self._core
        while not core.closed:
            frame = core.pop()
            if frame is not None:
                self._mend()
                return frame
            if core.state.done:
                break
            self._fill()
        self.close()
        raise StopIteration

    def _fill(self) -> None:
        core = self._core
        with redis_errors(self._settings):
            response = self._redis.xread(
                {core.stream_key: core.last_id}, count=READ_COUNT, block=core.wait_ms()
            )
            if not core.take(response):
                core.after_idle(self._redis.hgetall(core.job_key))  # type: ignore[arg-type]

    def _mend(self) -> None:
        """After a hole in the frames, the checkpointed windows restore the text."""
        windows = self._core.state.repair_through
        if windows:
            with redis_errors(self._settings):
                texts = self._redis.lrange(self._core.checkpoint_key, 0, windows - 1)
            if len(texts) == windows:
                self._core.state.repair("".join(parse_window_text(t) for t in texts))

    def close(self) -> None:
        """Stop reading (a client that leaves early); the job itself goes on."""
        self._core.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncJobStream(_StreamView):
    """The async face of JobStream: `async for frame in stream`, `await stream.aclose()`."""

    def __init__(self, client: redis.asyncio.Redis, settings: Settings, core: _StreamCore) -> None:
        self._redis, self._settings, self._core = client, settings, core

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Frame:
        core = self._core
        while not core.closed:
            frame = core.pop()
            if frame is not None:
                await self._mend()
                return frame
            if core.state.done:
                break
            await self._fill()
        await self.aclose()
        raise StopAsyncIteration

    async def _fill(self) -> None:
        core = self._core
        with redis_errors(self._settings):
            response = await self._redis.xread(
                {core.stream_key: core.last_id}, count=READ_COUNT, block=core.wait_ms()
            )
            if not core.take(response):
                core.after_idle(await self._redis.hgetall(core.job_key))  # type: ignore[arg-type]

    async def _mend(self) -> None:
        windows = self._core.state.repair_through
        if windows:
            with redis_errors(self._settings):
                texts = await self._redis.lrange(self._core.checkpoint_key, 0, windows - 1)
            if len(texts) == windows:
                self._core.state.repair("".join(parse_window_text(t) for t in texts))

    async def aclose(self) -> None:
        self._core.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _entry_id(text: str) -> tuple[int, int]:
    """`EPOCH-SEQ` (or `SEQ`, of the first attempt) as numbers; InvalidJob when malformed."""
    epoch, _, seq = text.partition("-") if "-" in text else ("0", "-", text)
    if not (epoch.isdigit() and seq.isdigit()):
        raise InvalidJob(f"not a stream position: {text!r} (expected EPOCH-SEQ, e.g. 0-12)")
    return int(epoch), int(seq)


def parse_window_text(entry: str | bytes) -> str:
    """The text of one checkpointed window."""
    text: str = json.loads(entry)["text"]
    return text


class _HandleView(Generic[S]):
    """What the sync and async job handles share: the job, and its latest stream."""

    def __init__(self, keys: Keys, job_id: str, submitted: float | None) -> None:
        self.job_id = job_id
        self._keys = keys
        self._submitted = time.monotonic() if submitted is None else submitted
        self._stream: S | None = None

    def _core(self, from_id: str | None, timeout: float | None) -> _StreamCore:
        return _StreamCore(self.job_id, self._keys, self._submitted, from_id, timeout)

    @property
    def text(self) -> str:
        return self._stream.text if self._stream is not None else ""

    @property
    def stats(self) -> StreamStats:
        return self._stream.stats if self._stream is not None else StreamState(self.job_id).stats()


class JobHandle(_HandleView[JobStream]):
    """A job: `stream()` reads its frames (from the start, or from an entry id such as
    "0-12"), `result()` waits for its result. `text` and `stats` are the latest stream's."""

    def __init__(self, client: Client, job_id: str, submitted: float | None = None) -> None:
        super().__init__(client.keys, job_id, submitted)
        self._client = client

    def stream(self, from_id: str | None = None, timeout: float | None = None) -> JobStream:
        core = self._core(from_id, timeout)
        self._stream = JobStream(self._client.redis, self._client.settings, core)
        return self._stream

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


class Client(_BaseClient):
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.redis: redis.Redis = connect(self.settings)

    def submit(self, prompt: str | JobSpec | None = None, /, **fields: Any) -> JobHandle:
        """Validate and queue a job. Raises InvalidJob (nothing queued) or RedisUnavailable."""
        submitted = time.monotonic()
        job = self._prepare(prompt, fields)
        with redis_errors(self.settings):
            pipe = self.redis.pipeline()
            pipe.hset(self.keys.job(job.job_id), mapping=job.record.to_hash())
            pipe.expire(self.keys.job(job.job_id), self.settings.job_ttl_s)
            pipe.execute()
        try:
            self._dispatch(job)
        except Exception:
            with redis_errors(self.settings):  # not queued: leave no record behind
                self.redis.delete(self.keys.job(job.job_id))
            raise
        return JobHandle(self, job.job_id, submitted)

    def job(self, job_id: str) -> JobHandle:
        """A handle on a job submitted earlier (by any process), while its record is kept."""
        with redis_errors(self.settings):
            exists = self.redis.exists(self.keys.job(check_job_id(job_id)))
        if not exists:
            raise InvalidJob(f"no job {job_id} (never submitted, or its retention has passed)")
        return JobHandle(self, job_id)

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncJobHandle(_HandleView[AsyncJobStream]):
    """The async face of JobHandle: `async for frame in job.stream()`, `await job.result()`."""

    def __init__(self, client: AsyncClient, job_id: str, submitted: float | None = None) -> None:
        super().__init__(client.keys, job_id, submitted)
        self._client = client

    def stream(self, from_id: str | None = None, timeout: float | None = None) -> AsyncJobStream:
        core = self._core(from_id, timeout)
        self._stream = AsyncJobStream(self._client.redis, self._client.settings, core)
        return self._stream

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


class AsyncClient(_BaseClient):
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.redis: redis.asyncio.Redis = connect_async(self.settings)

    async def submit(self, prompt: str | JobSpec | None = None, /, **fields: Any) -> AsyncJobHandle:
        submitted = time.monotonic()
        job = self._prepare(prompt, fields)
        with redis_errors(self.settings):
            pipe = self.redis.pipeline()
            pipe.hset(self.keys.job(job.job_id), mapping=job.record.to_hash())
            pipe.expire(self.keys.job(job.job_id), self.settings.job_ttl_s)
            await pipe.execute()
        try:
            # kombu publishes synchronously; a thread keeps the event loop free meanwhile.
            await asyncio.to_thread(self._dispatch, job)
        except Exception:
            with redis_errors(self.settings):  # not queued: leave no record behind
                await self.redis.delete(self.keys.job(job.job_id))
            raise
        return AsyncJobHandle(self, job.job_id, submitted)

    async def job(self, job_id: str) -> AsyncJobHandle:
        with redis_errors(self.settings):
            exists = await self.redis.exists(self.keys.job(check_job_id(job_id)))
        if not exists:
            raise InvalidJob(f"no job {job_id} (never submitted, or its retention has passed)")
        return AsyncJobHandle(self, job_id)

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
