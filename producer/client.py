"""The Python API: `Client` and `AsyncClient`, parallel classes over one shared core.

    with Client() as client:
        job = client.submit("Once upon a time", model="tiny", max_tokens=64)
        for frame in job.stream():
            if frame.type == "token":
                print(frame.data.text, end="", flush=True)
        print(job.result().usage)

Each handle subscribes to its job's channel before the job is dispatched, so no frame is lost
between submit and the first read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Self

import redis
import redis.asyncio
from redis.asyncio.client import PubSub as AsyncPubSub
from redis.client import PubSub

from common.celery_config import GENERATE_TASK, make_celery
from common.connection import connect, connect_async, redis_errors, unavailable
from common.errors import StreamTimeout
from common.frames import Frame, parse_frame
from common.keys import Keys
from common.prompts import PromptCounter
from common.registry import ModelRegistry
from common.schemas import JobResult, JobSpec
from common.settings import Settings
from producer.core import PreparedJob, StreamState, StreamStats, parse_spec, prepare_job

SUBSCRIBE_CONFIRM_S = 10.0
POLL_S = 1.0  # longest single wait for a frame; a stream without a deadline waits in these


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


class JobHandle:
    """A submitted job: iterate `stream()` for frames, or call `result()`."""

    def __init__(
        self, job_id: str, pubsub: PubSub, settings: Settings, submitted: float | None = None
    ) -> None:
        self.job_id = job_id
        self._pubsub = pubsub
        self._settings = settings
        self._state = StreamState(
            job_id, started=time.monotonic() if submitted is None else submitted
        )

    @property
    def text(self) -> str:
        """Text received so far."""
        return self._state.text

    @property
    def stats(self) -> StreamStats:
        return self._state.stats()

    def stream(self, timeout: float | None = None) -> Iterator[Frame]:
        """Yield frames until `done` or `error` (inclusive). `timeout`: seconds for the whole
        stream; StreamTimeout when it passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with redis_errors(self._settings):
            while not self._state.done:
                msg = self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_remaining(deadline, self.job_id)
                )
                if msg is not None and msg["type"] == "message":
                    frame = parse_frame(msg["data"])
                    self._state.apply(frame)
                    yield frame
        self.close()

    def result(self, timeout: float | None = None) -> JobResult:
        """Consume the rest of the stream and return the result; JobFailed if the job failed."""
        for _ in self.stream(timeout):
            pass
        return self._state.outcome()

    def close(self) -> None:
        """Stop listening (a client that leaves early); the job itself goes on."""
        self._pubsub.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(_BaseClient):
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self._redis: redis.Redis = connect(self.settings)

    def submit(self, prompt: str | JobSpec | None = None, /, **fields: Any) -> JobHandle:
        """Validate and queue a job. Raises InvalidJob (nothing queued) or RedisUnavailable."""
        submitted = time.monotonic()
        job = self._prepare(prompt, fields)
        with redis_errors(self.settings):
            pubsub = self._redis.pubsub()  # type: ignore[no-untyped-call]
            pubsub.subscribe(self.keys.tokens(job.job_id))
            _confirm_subscribed(pubsub)
            pipe = self._redis.pipeline()
            pipe.hset(self.keys.job(job.job_id), mapping=job.record.to_hash())
            pipe.expire(self.keys.job(job.job_id), self.settings.job_ttl_s)
            pipe.execute()
        try:
            self._dispatch(job)
        except Exception:
            with redis_errors(self.settings):  # not queued: leave no record behind
                self._redis.delete(self.keys.job(job.job_id))
                pubsub.close()
            raise
        return JobHandle(job.job_id, pubsub, self.settings, submitted)

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncJobHandle:
    """The async face of JobHandle: `async for frame in job.stream()`, `await job.result()`."""

    def __init__(
        self, job_id: str, pubsub: AsyncPubSub, settings: Settings, submitted: float | None = None
    ) -> None:
        self.job_id = job_id
        self._pubsub = pubsub
        self._settings = settings
        self._state = StreamState(
            job_id, started=time.monotonic() if submitted is None else submitted
        )

    @property
    def text(self) -> str:
        return self._state.text

    @property
    def stats(self) -> StreamStats:
        return self._state.stats()

    async def stream(self, timeout: float | None = None) -> AsyncIterator[Frame]:
        deadline = None if timeout is None else time.monotonic() + timeout
        with redis_errors(self._settings):
            while not self._state.done:
                msg = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_remaining(deadline, self.job_id)
                )
                if msg is not None and msg["type"] == "message":
                    frame = parse_frame(msg["data"])
                    self._state.apply(frame)
                    yield frame
        await self.aclose()

    async def result(self, timeout: float | None = None) -> JobResult:
        async for _ in self.stream(timeout):
            pass
        return self._state.outcome()

    async def aclose(self) -> None:
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncClient(_BaseClient):
    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self._redis: redis.asyncio.Redis = connect_async(self.settings)

    async def submit(self, prompt: str | JobSpec | None = None, /, **fields: Any) -> AsyncJobHandle:
        submitted = time.monotonic()
        job = self._prepare(prompt, fields)
        with redis_errors(self.settings):
            pubsub = self._redis.pubsub()
            await pubsub.subscribe(self.keys.tokens(job.job_id))
            await _aconfirm_subscribed(pubsub)
            pipe = self._redis.pipeline()
            pipe.hset(self.keys.job(job.job_id), mapping=job.record.to_hash())
            pipe.expire(self.keys.job(job.job_id), self.settings.job_ttl_s)
            await pipe.execute()
        try:
            # kombu publishes synchronously; a thread keeps the event loop free meanwhile.
            await asyncio.to_thread(self._dispatch, job)
        except Exception:
            with redis_errors(self.settings):  # not queued: leave no record behind
                await self._redis.delete(self.keys.job(job.job_id))
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return AsyncJobHandle(job.job_id, pubsub, self.settings, submitted)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _remaining(deadline: float | None, job_id: str) -> float:
    if deadline is None:
        return POLL_S
    left = deadline - time.monotonic()
    if left <= 0:
        raise StreamTimeout(f"job {job_id}: no terminal frame within the timeout")
    return min(left, POLL_S)


def _confirm_subscribed(pubsub: PubSub) -> None:
    """Wait for Redis to acknowledge SUBSCRIBE, so a frame published right after is ours."""
    msg = pubsub.get_message(timeout=SUBSCRIBE_CONFIRM_S)
    if msg is None or msg["type"] != "subscribe":
        raise redis.ConnectionError("no confirmation of SUBSCRIBE from Redis")


async def _aconfirm_subscribed(pubsub: AsyncPubSub) -> None:
    msg = await pubsub.get_message(timeout=SUBSCRIBE_CONFIRM_S)
    if msg is None or msg["type"] != "subscribe":
        raise redis.ConnectionError("no confirmation of SUBSCRIBE from Redis")
