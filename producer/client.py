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

A stream reads the job's durable Redis Stream (written by the relay): it replays from the
start, or from a given entry, then follows until the terminal frame, so it can be opened at any
time while the job's stream is retained, before or after the job ended. Resumed attempts and
frames the relay missed are handled, so `text` always ends as the job's final text. An entry
that does not validate (anything with write rights on Redis can add one) is skipped, logged
and counted in `stats.skipped`, never raised. Reads retry a lost Redis connection for
GENQ_REDIS_RETRY_S (see producer/retry.py) and go on from the last entry seen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Generic, Self, TypeVar

import redis
import redis.asyncio

from genq.common.connection import connect, connect_async, redis_errors
from genq.common.errors import InvalidEntry, InvalidJob, StreamTimeout
from genq.common.frames import Frame, TokenFrame
from genq.common.ids import check_batch_id, check_job_id, is_job_id
from genq.common.presence import live_workers, live_workers_async
from genq.common.registry import ModelRegistry
from genq.common.schemas import DEFAULT_PRIORITY, JobRecord, JobResult, JobSpec, WorkerInfo
from genq.common.settings import Settings
from genq.common.store import Command, arun, arun_transaction, jobs, leases, run, run_transaction
from genq.common.store import streams as stream_store
from genq.common.store.keys import Keys
from genq.producer.batches import AsyncBatchHandle, BatchHandle, BatchOptions, BatchSubmitter
from genq.producer.batchfile import Source
from genq.producer.core import (
    Placement,
    PreparedJob,
    StreamState,
    StreamStats,
    parse_entry,
    parse_record,
    terminal_from_record,
)
from genq.producer.retry import retrying, retrying_async
from genq.producer.submitter import CancelReport, Submitter

OnChunk = Callable[[TokenFrame], object]
STOP = True  # what an `on_chunk` callback returns to stop its job (any true value does)

POLL_S = 1.0  # longest single wait for stream entries; then the job's record is consulted
TERMINAL_GRACE_S = 2.0  # record says ended, stream has no terminal frame yet: wait this long
READ_COUNT = 512  # stream entries per read

log = logging.getLogger("genq.client")


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
        record = job.record
        ops: list[Command[Any]] = [
            jobs.write(self.keys, job.job_id, record, self.settings.job_ttl_s)
        ]
        if record.expires_ms:
            ops.append(leases.add_expiry(self.keys, job.job_id, record.expires_ms))
        return ops

    def _batch_submitter(
        self, connection: redis.Redis, batch_id: str | None, place: Placement, **options: Any
    ) -> BatchSubmitter:
        """A batch's submission, checked and placed as a job's is (see Client.submit_batch)."""
        batch_options = BatchOptions(batch_id, place.priority, place.expires_in_s, **options)
        return BatchSubmitter(self.submitter, batch_options, connection)


class _StreamCore:
    """What JobStream and AsyncJobStream share, with no I/O: position, deadline, buffered
    frames, and the fallback to the job's record when its stream lacks a terminal frame."""

    def __init__(
        self,
        job_id: str,
        keys: Keys,
        started: float,
        from_id: str | None,
        timeout: float | None,
        on_chunk: OnChunk | None = None,
    ) -> None:
        self.state = StreamState(job_id, started=started)
        self.on_chunk = on_chunk
        self.stopping = False  # on_chunk asked to stop; the job's cancel was sent
        self.keys = keys
        self.stream_key = stream_store.stream_key(keys, job_id)
        self.record_fields = jobs.fields(keys, job_id)
        epoch, seq = _entry_id(from_id or "0-1")
        # Reading starts at `from_id` inclusive (XREAD returns what follows `last_id`), and a
        # reader that starts mid-stream has not missed what it skipped.
        self.last_id = f"{epoch}-{max(seq - 1, 0)}"
        self.state.epoch, self.state.seq = epoch, max(seq - 1, 0)
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.buffer: deque[Frame] = deque()
        self.ended_seen_at: float | None = None
        self.closed = False
        self.checkpoint_invalid = False

    def wait_ms(self) -> int:
        if self.deadline is None:
            return int(POLL_S * 1000)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StreamTimeout(f"job {self.state.job_id}: no terminal frame within the timeout")
        return max(1, int(min(left, POLL_S) * 1000))

    def take(self, response: Any) -> bool:
        """Buffer the frames of an XREAD reply; an entry that is not a valid frame of this job
        is skipped and reported (the hole it leaves is mended as any other)."""
        for _key, entries in response or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                try:
                    self.buffer.append(parse_entry(self.state.job_id, entry_id, fields))
                except InvalidEntry as exc:
                    self.state.skipped += 1
                    log.warning("skipped a stream entry that does not validate: %s", exc)
        return bool(self.buffer)

    def pop(self) -> Frame | None:
        if not self.buffer:
            return None
        frame = self.buffer.popleft()
        self.state.apply(frame)
        return frame

    def wants_stop(self, frame: Frame) -> bool:
        """True once, when `on_chunk` first returns a true value for a token chunk."""
        if self.stopping or self.on_chunk is None or not isinstance(frame, TokenFrame):
            return False
        self.stopping = bool(self.on_chunk(frame))
        return self.stopping

    def after_idle(self, raw_record: Mapping[Any, Any]) -> None:
        """No entries for a while: if the record says the job ended and its terminal frame
        still has not come, end with a frame made from the record."""
        if not raw_record:
            return
        try:
            record = parse_record(self.state.job_id, raw_record)
        except InvalidEntry as exc:  # not written by genq: it tells nothing
            log.warning("%s", exc)
            return
        if not record.state.terminal:
            self.ended_seen_at = None
            return
        now = time.monotonic()
        if self.ended_seen_at is None:
            self.ended_seen_at = now
        elif now - self.ended_seen_at >= TERMINAL_GRACE_S:
            self.buffer.append(terminal_from_record(record, self.state.job_id))

    def windows_to_mend(self) -> int | None:
        """How many checkpointed windows would mend a hole in the text, if any would."""
        return None if self.checkpoint_invalid else self.state.repair_through

    def mend(self, texts: Sequence[str | bytes]) -> None:
        """The checkpointed windows a hole waits for, once they are all there."""
        if len(texts) != self.state.repair_through:
            return
        try:
            job_id = self.state.job_id
            self.state.repair("".join(stream_store.parse_entry(job_id, t).text for t in texts))
        except InvalidEntry as exc:  # the done frame's text mends it at the end
            self.checkpoint_invalid = True
            log.warning("job %s: cannot mend from its checkpoint: %s", self.state.job_id, exc)


class _StreamView:
    """What a reader sees of a stream, the same for the sync and async faces."""

    core: _StreamCore  # the reading, without I/O (stream_many reads several at once)

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
        self.core.deadline = None if timeout is None else time.monotonic() + timeout


S = TypeVar("S", bound=_StreamView)


class JobStream(_StreamView):
    """One reading of a job's frames: iterate it; `.text` grows as frames arrive; `.result`
    once it is exhausted (ResultNotReady before); `close()` when leaving early. When the
    stream's `on_chunk` returns a true value, the job is cancelled and the stream reads on to
    its end: the result holds the partial text, with finish reason `cancelled`."""

    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        core: _StreamCore,
        cancel: Callable[[], object] | None = None,
    ) -> None:
        self._redis, self._settings, self.core = client, settings, core
        self._cancel = cancel

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Frame:
        core = self.core
        while not core.closed:
            frame = core.pop()
            if frame is not None:
                self.mend()
                if core.wants_stop(frame) and self._cancel is not None:
                    self._cancel()
                return frame
            if core.state.done:
                break
            self._fill()
        self.close()
        raise StopIteration

    def _fill(self) -> None:
        core, r = self.core, self._redis
        read = stream_store.read({core.stream_key: core.last_id}, READ_COUNT, core.wait_ms())
        response = retrying(self._settings, lambda: run(r, read))
        if not core.take(response):
            core.after_idle(retrying(self._settings, lambda: run(r, core.record_fields)))

    def mend(self) -> None:
        """After a hole in the frames, the checkpointed windows restore the text (reading the
        stream does it for each frame; stream_many does it for the frames it reads)."""
        core = self.core
        windows = core.windows_to_mend()
        if windows:
            read = stream_store.raw_entries(core.keys, core.state.job_id, windows)
            self.core.mend(retrying(self._settings, lambda: run(self._redis, read)))

    def close(self) -> None:
        """Stop reading (a client that leaves early); the job itself goes on."""
        self.core.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncJobStream(_StreamView):
    """The async face of JobStream: `async for frame in stream`, `await stream.aclose()`."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        settings: Settings,
        core: _StreamCore,
        cancel: Callable[[], Any] | None = None,
    ) -> None:
        self._redis, self._settings, self.core = client, settings, core
        self._cancel = cancel

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Frame:
        core = self.core
        while not core.closed:
            frame = core.pop()
            if frame is not None:
                await self.mend()
                if core.wants_stop(frame) and self._cancel is not None:
                    await self._cancel()
                return frame
            if core.state.done:
                break
            await self._fill()
        await self.aclose()
        raise StopAsyncIteration

    async def _fill(self) -> None:
        core, r = self.core, self._redis
        read = stream_store.read({core.stream_key: core.last_id}, READ_COUNT, core.wait_ms())
        response = await retrying_async(self._settings, lambda: arun(r, read))
        if not core.take(response):
            raw = await retrying_async(self._settings, lambda: arun(r, core.record_fields))
            core.after_idle(raw)

    async def mend(self) -> None:
        """After a hole in the frames, the checkpointed windows restore the text."""
        core, r = self.core, self._redis
        windows = core.windows_to_mend()
        if windows:
            read = stream_store.raw_entries(core.keys, core.state.job_id, windows)
            core.mend(await retrying_async(self._settings, lambda: arun(r, read)))

    async def aclose(self) -> None:
        self.core.closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


H = TypeVar("H")
M = TypeVar("M", bound=_StreamView)


class _Merge(Generic[H, M]):
    """stream_many without I/O, the same for both faces: the streams still open, the frames
    they buffered, and one XREAD over all of them (positions and the shortest wait)."""

    def __init__(self, streams: dict[str, tuple[H, M]]) -> None:
        self.streams = streams
        self._by_key = {stream.core.stream_key: stream for _, stream in streams.values()}

    def ready(self) -> Iterator[tuple[H, M, Frame]]:
        """Each buffered frame, tagged by job (its stream mends the text before it is
        yielded); a stream whose terminal frame came out is then dropped."""
        for job_id, (job, stream) in list(self.streams.items()):
            while (frame := stream.core.pop()) is not None:
                yield job, stream, frame
            if stream.core.state.done:
                del self.streams[job_id]
                del self._by_key[stream.core.stream_key]

    def positions(self) -> dict[Any, Any]:
        return {key: stream.core.last_id for key, stream in self._by_key.items()}

    def wait_ms(self) -> int:
        return min(stream.core.wait_ms() for stream in self._by_key.values())

    def take(self, response: Any) -> list[_StreamCore]:
        """Buffer an XREAD reply; after an empty one, the cores to check against their job's
        record (see _StreamCore.after_idle)."""
        for item in response or []:
            self._by_key[str(item[0])].core.take([item])
        return [] if response else [stream.core for stream in self._by_key.values()]


def _on_loop(progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """`progress`, called from another thread, run on the running event loop."""
    if progress is None:
        return None
    loop = asyncio.get_running_loop()

    def report(done: int) -> None:
        loop.call_soon_threadsafe(progress, done)

    return report


def _entry_id(text: str) -> tuple[int, int]:
    """`EPOCH-SEQ` (or `SEQ`, of the first attempt) as numbers; InvalidJob when malformed."""
    epoch, _, seq = text.partition("-") if "-" in text else ("0", "-", text)
    if not (epoch.isdigit() and seq.isdigit()):
        raise InvalidJob(f"not a stream position: {text!r} (expected EPOCH-SEQ, e.g. 0-12)")
    return int(epoch), int(seq)


class _HandleView(Generic[S]):
    """What the sync and async job handles share: the job, and its latest stream."""

    def __init__(self, keys: Keys, job_id: str, submitted: float | None) -> None:
        self.job_id = job_id
        self._keys = keys
        self._submitted = time.monotonic() if submitted is None else submitted
        self._stream: S | None = None

    def _core(
        self, from_id: str | None, timeout: float | None, on_chunk: OnChunk | None = None
    ) -> _StreamCore:
        return _StreamCore(self.job_id, self._keys, self._submitted, from_id, timeout, on_chunk)

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

    def stream(
        self,
        from_id: str | None = None,
        timeout: float | None = None,
        on_chunk: OnChunk | None = None,
    ) -> JobStream:
        """Read the job's frames. `on_chunk(frame)` is called for each token chunk; returning
        a true value (`genq.STOP`) cancels the job, and the stream still ends with its
        result: the text so far, finish reason `cancelled`."""
        core = self._core(from_id, timeout, on_chunk)
        client = self._client
        self._stream = JobStream(client.redis, client.settings, core, self.cancel)
        return self._stream

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


class Client(_BaseClient):
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.redis: redis.Redis = connect(self.settings)

    def submit(
        self,
        prompt: str | JobSpec | None = None,
        /,
        *,
        priority: int = DEFAULT_PRIORITY,
        expires_in: float | None = None,
        **fields: Any,
    ) -> JobHandle:
        """Validate and queue a job. `priority` 0-9 (9 is served first); `expires_in` seconds
        after which a job not started yet ends as `expired`. Raises InvalidJob (nothing
        queued) or RedisUnavailable."""
        submitted = time.monotonic()
        job = self.submitter.prepare(prompt, fields, Placement(priority, expires_in))
        depth = self.submitter.queue_depth(job)
        if depth is not None:
            self.submitter.admit(job, retrying(self.settings, lambda: run(self.redis, depth)))
        with redis_errors(self.settings):
            run_transaction(self.redis, self._write_ops(job))
        try:
            self.submitter.dispatch(job)
        except Exception:
            with redis_errors(self.settings):  # not queued: leave no record behind
                run(self.redis, jobs.delete(self.keys, job.job_id))
            raise
        return JobHandle(self, job.job_id, submitted)

    def job(self, job_id: str, check: bool = True) -> JobHandle:
        """A handle on a job submitted earlier (by any process), while its record is kept."""
        check_job_id(job_id)
        if check:
            exists = retrying(
                self.settings, lambda: run(self.redis, jobs.exists(self.keys, job_id))
            )
            if not exists:
                raise InvalidJob(f"no job {job_id} (never submitted, or its retention has passed)")
        return JobHandle(self, job_id)

    def record(self, job_id: str) -> JobRecord:
        """A job's record (state, attempts, worker, timestamps, result): InvalidJob when no
        such job is kept, InvalidEntry when its record is not one genq wrote."""
        read = jobs.read(self.keys, check_job_id(job_id))
        record = retrying(self.settings, lambda: run(self.redis, read))
        if record is None:
            raise InvalidJob(f"no job {job_id} (never submitted, or its retention has passed)")
        return record

    def submit_batch(
        self,
        source: Source,
        *,
        batch_id: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        expires_in: float | None = None,
        defaults: dict[str, Any] | None = None,
        skip_invalid: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> BatchHandle[JobHandle]:
        """Submit a batch: a JSONL file's path, or lines (JSON text or dicts), each a genq job
        or an OpenAI batch request with a `custom_id`. Every line is checked first: a bad one
        raises InvalidBatch naming each bad line, and nothing is submitted, unless
        `skip_invalid` (then the handle's `rejects` lists them). Submitting again with the same
        `batch_id` adds only the custom_ids the batch does not have."""
        place = Placement(priority, expires_in)  # checks them before anything is read
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
        if is_job_id(job_or_batch_id):
            with redis_errors(self.settings):
                exists = run(self.redis, jobs.exists(self.keys, job_or_batch_id))
            if exists:
                return self.submitter.cancel(self.redis, [job_or_batch_id])
        return self.batch(job_or_batch_id).cancel()

    def stream_many(
        self, jobs: Iterable[JobHandle], timeout: float | None = None
    ) -> Iterator[tuple[JobHandle, Frame]]:
        """Read several jobs' frames at once, as they arrive, tagged by job: one blocking read
        covers every job still running. Each handle's `text` and `result()` work afterwards."""
        merge = _Merge({job.job_id: (job, job.stream(timeout=timeout)) for job in jobs})
        while merge.streams:
            for job, stream, frame in merge.ready():
                stream.mend()
                yield job, frame
            if merge.streams:
                self._fill_many(merge)

    def _fill_many(self, merge: _Merge[JobHandle, JobStream]) -> None:
        positions, wait_ms = merge.positions(), merge.wait_ms()
        read = stream_store.read(positions, READ_COUNT, wait_ms)
        response = retrying(self.settings, partial(run, self.redis, read))
        for core in merge.take(response):  # a quiet spell: a job may have ended unseen
            core.after_idle(retrying(self.settings, partial(run, self.redis, core.record_fields)))

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


class AsyncJobHandle(_HandleView[AsyncJobStream]):
    """The async face of JobHandle: `async for frame in job.stream()`, `await job.result()`."""

    def __init__(self, client: AsyncClient, job_id: str, submitted: float | None = None) -> None:
        super().__init__(client.keys, job_id, submitted)
        self._client = client

    def stream(
        self,
        from_id: str | None = None,
        timeout: float | None = None,
        on_chunk: OnChunk | None = None,
    ) -> AsyncJobStream:
        core = self._core(from_id, timeout, on_chunk)
        client = self._client
        self._stream = AsyncJobStream(client.redis, client.settings, core, self.cancel)
        return self._stream

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


class AsyncClient(_BaseClient):
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self.redis: redis.asyncio.Redis = connect_async(self.settings)
        self._submit_redis: redis.Redis | None = None  # made by the first submit_batch

    async def submit(
        self,
        prompt: str | JobSpec | None = None,
        /,
        *,
        priority: int = DEFAULT_PRIORITY,
        expires_in: float | None = None,
        **fields: Any,
    ) -> AsyncJobHandle:
        submitted, place = time.monotonic(), Placement(priority, expires_in)
        # Checking renders the prompt and may load a vocabulary and tokenize: not on the loop.
        job = await asyncio.to_thread(self.submitter.prepare, prompt, fields, place)
        depth = self.submitter.queue_depth(job)
        if depth is not None:
            waiting = await retrying_async(self.settings, lambda: arun(self.redis, depth))
            self.submitter.admit(job, waiting)
        with redis_errors(self.settings):
            await arun_transaction(self.redis, self._write_ops(job))
        try:
            # kombu publishes synchronously; a thread keeps the event loop free meanwhile.
            await asyncio.to_thread(self.submitter.dispatch, job)
        except Exception:
            with redis_errors(self.settings):  # not queued: leave no record behind
                await arun(self.redis, jobs.delete(self.keys, job.job_id))
            raise
        return AsyncJobHandle(self, job.job_id, submitted)

    async def job(self, job_id: str, check: bool = True) -> AsyncJobHandle:
        """A handle on a job submitted earlier (see Client.job)."""
        exists_cmd = jobs.exists(self.keys, check_job_id(job_id))
        if check:
            exists = await retrying_async(self.settings, lambda: arun(self.redis, exists_cmd))
            if not exists:
                raise InvalidJob(f"no job {job_id} (never submitted, or its retention has passed)")
        return AsyncJobHandle(self, job_id)

    async def record(self, job_id: str) -> JobRecord:
        """The async face of Client.record."""
        read = jobs.read(self.keys, check_job_id(job_id))
        record = await retrying_async(self.settings, lambda: arun(self.redis, read))
        if record is None:
            raise InvalidJob(f"no job {job_id} (never submitted, or its retention has passed)")
        return record

    async def submit_batch(
        self,
        source: Source,
        *,
        batch_id: str | None = None,
        priority: int = DEFAULT_PRIORITY,
        expires_in: float | None = None,
        defaults: dict[str, Any] | None = None,
        skip_invalid: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> AsyncBatchHandle[AsyncJobHandle]:
        """Submit a batch (see Client.submit_batch). The submission is Client's own, run in a
        thread (reading the source and publishing to the broker block), so that the event
        loop stays free; `progress` is called on the event loop."""
        place = Placement(priority, expires_in)
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
        if is_job_id(job_or_batch_id):
            with redis_errors(self.settings):
                exists = await arun(self.redis, jobs.exists(self.keys, job_or_batch_id))
            if exists:
                return await self.submitter.acancel(self.redis, [job_or_batch_id])
        return await (await self.batch(job_or_batch_id)).cancel()

    async def stream_many(
        self, jobs: Iterable[AsyncJobHandle], timeout: float | None = None
    ) -> AsyncIterator[tuple[AsyncJobHandle, Frame]]:
        """Several jobs' frames as they arrive, tagged by job (see Client.stream_many: the
        same algorithm, one blocking read for every job still running)."""
        merge = _Merge({job.job_id: (job, job.stream(timeout=timeout)) for job in jobs})
        while merge.streams:
            for job, stream, frame in merge.ready():
                await stream.mend()
                yield job, frame
            if merge.streams:
                await self._fill_many(merge)

    async def _fill_many(self, merge: _Merge[AsyncJobHandle, AsyncJobStream]) -> None:
        positions, wait_ms = merge.positions(), merge.wait_ms()
        read = stream_store.read(positions, READ_COUNT, wait_ms)
        response = await retrying_async(self.settings, partial(arun, self.redis, read))
        for core in merge.take(response):
            raw = await retrying_async(self.settings, partial(arun, self.redis, core.record_fields))
            core.after_idle(raw)

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
