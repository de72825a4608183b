"""workers.publishing.outbox: a bundle's finished jobs share round trips, and each still ends whole.

The jobs run in this process (workers.celery.jobs.run_jobs, the tiny model, a real Redis and relay),
with a client that counts the pipelines it runs: a round trip each."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from redis.client import Pipeline

from genq import Client
from genq.common.frames import DoneFrame, TokenData, parse_frame
from genq.common.lifecycle import Finish
from genq.common.schemas import (
    FinishReason,
    GenerateRequest,
    JobRecord,
    JobResult,
    JobState,
    Timings,
    Usage,
)
from genq.common.settings import Settings
from genq.common.store import channels, streams
from genq.common.store.keys import Keys
from genq.workers.celery.jobs import WorkerContext, claim, run_jobs
from genq.workers.publishing.outbox import Outbox
from genq.workers.publishing.publisher import FramePublisher
from ops.localstack import wait_for
from tests.state import job_record

from .conftest import Stack

JOBS = 12
SHORT: dict[str, Any] = {"prompt": "Once upon", "max_tokens": 8, "ignore_eos": True}


class CountingRedis(redis.Redis):
    """A client that counts the pipelines it runs."""

    round_trips = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def counted(raise_on_error: bool = True) -> list[Any]:
            self.round_trips += 1
            return execute(raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


def context(settings: Settings, **overrides: Any) -> WorkerContext:
    ctx = WorkerContext.from_settings(settings.model_copy(update=overrides))
    ctx.redis = CountingRedis(connection_pool=ctx.redis.connection_pool)
    return ctx


def queued_batch(client: Client, count: int) -> list[GenerateRequest]:
    """A batch's jobs, queued with no worker to take them: run here instead."""
    batch = client.submit_batch([{"custom_id": f"j{n}", **SHORT, "seed": n} for n in range(count)])
    return [GenerateRequest(job_id=j, batch_id=batch.batch_id) for j in batch.job_ids()]


def record(client: Client, job_id: str) -> JobRecord:
    return job_record(client.redis, client.keys, job_id)


# With a long chunk interval, 8-token jobs make no round trip of their own (chunks hold 16
# tokens), and all their endings go out together once the bundle is done. With none, each of
# a job's first 7 tokens is a chunk of its own, and each ending goes out at once.
@pytest.mark.parametrize(("interval_ms", "round_trips"), [(60_000.0, 1), (0.0, JOBS * (7 + 1))])
def test_a_bundles_endings_share_round_trips_within_the_chunk_interval(
    make_stack: Callable[[], Stack], interval_ms: float, round_trips: int
) -> None:
    stack = make_stack()
    stack.relay()
    with Client(stack.settings) as client:
        requests = queued_batch(client, JOBS)
        ctx = context(stack.settings, chunk_interval_ms=interval_ms)
        run_jobs(ctx, requests, worker="outbox@test")
        assert isinstance(ctx.redis, CountingRedis)
        assert ctx.redis.round_trips == round_trips
        for request in requests:
            job = record(client, request.job_id)
            assert job.state is JobState.SUCCEEDED and job.result is not None
            assert job.result.usage.completion_tokens == 8
            stream = client.job(request.job_id).stream(timeout=30)
            frames = list(stream)
            assert isinstance(frames[-1], DoneFrame)
            assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
            assert stream.text == job.result.text == stream.result.text


@dataclass
class TwoJobs:
    """Two jobs of a batch, claimed by this test as a worker claims them, and an outbox
    whose endings wait (an hour) until something sends them."""

    client: Client
    ctx: WorkerContext
    first: GenerateRequest
    second: GenerateRequest
    outbox: Outbox


@pytest.fixture
def two_jobs(make_stack: Callable[[], Stack]) -> Iterator[TwoJobs]:
    stack = make_stack()
    with Client(stack.settings) as client:
        first, second = queued_batch(client, 2)
        ctx = context(stack.settings)
        claimed = claim(ctx, [first, second], "outbox@test")
        assert [request.job_id for request, _ in claimed] == [first.job_id, second.job_id]
        outbox = ctx.outbox(3600.0)
        yield TwoJobs(client, ctx, first, second, outbox)


def test_a_waiting_ending_rides_along_with_the_next_round_trip(two_jobs: TwoJobs) -> None:
    client, first, outbox = two_jobs.client, two_jobs.first, two_jobs.outbox
    listener = channels.subscribe(client.redis, streams.channel(client.keys, first.job_id))
    outbox.add(streams.channel(client.keys, first.job_id), [], _done(first), _never)
    assert len(outbox) == 1
    assert record(client, first.job_id).state is JobState.RUNNING  # still waiting

    ctx = two_jobs.ctx
    pub = FramePublisher(ctx.redis, ctx.keys, two_jobs.second.job_id, 0, outbox)
    pub.token(TokenData(text="x", token_ids=[1]))  # the second job's round trip

    assert len(outbox) == 0
    assert record(client, first.job_id).state is JobState.SUCCEEDED
    message = listener.message(5)
    assert message is not None
    assert isinstance(parse_frame(message), DoneFrame)
    listener.close()


def test_a_waiting_ending_goes_out_by_itself_after_the_delay(two_jobs: TwoJobs) -> None:
    """Even when the next job makes no round trip for a long while (a long prompt)."""
    client, first = two_jobs.client, two_jobs.first
    outbox = two_jobs.ctx.outbox(0.2)
    outbox.add(streams.channel(client.keys, first.job_id), [], _done(first), _never)
    wait_for(
        lambda: record(client, first.job_id).state is JobState.SUCCEEDED, 30, "the flusher's flush"
    )
    assert len(outbox) == 0
    outbox.flush()  # nothing left: no round trip
    assert isinstance(two_jobs.ctx.redis, CountingRedis)
    assert two_jobs.ctx.redis.round_trips == 1


def test_an_ending_not_applied_is_reported_and_the_others_still_apply(two_jobs: TwoJobs) -> None:
    client, first, second = two_jobs.client, two_jobs.first, two_jobs.second
    superseded: list[str] = []
    for job, epoch in ((first, 1), (second, 0)):  # epoch 1: a newer attempt's ending
        channel = streams.channel(client.keys, job.job_id)
        two_jobs.outbox.add(channel, [], _done(job, epoch), _report(superseded, job.job_id))
    two_jobs.outbox.flush()
    assert superseded == [first.job_id]
    assert record(client, first.job_id).state is JobState.RUNNING
    assert record(client, second.job_id).state is JobState.SUCCEEDED


def test_a_flush_without_redis_raises_and_says_how_many_jobs_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    outbox = Outbox(client, Keys("genq"), 3600)
    outbox.max_delay_s = 3600.0
    finish = Finish("a" * 32, 0, "", JobState.RUNNING, {"state": JobState.SUCCEEDED}, "{}")
    outbox.add("genq:{x}:tokens", [], finish, _never)
    with caplog.at_level(logging.ERROR), pytest.raises(redis.ConnectionError):
        outbox.flush()
    assert "1 finished job(s) could not be recorded" in caplog.text


def _done(request: GenerateRequest, epoch: int = 0) -> Finish:
    result = JobResult(
        job_id=request.job_id,
        model="tiny",
        text="",
        finish_reason=FinishReason.LENGTH,
        usage=Usage(prompt_tokens=1, completion_tokens=0),
        timings=Timings(queue_wait_ms=0, first_token_ms=0, generation_ms=0, tokens_per_s=0),
    )
    frame = DoneFrame(job_id=request.job_id, epoch=epoch, seq=1, data=result)
    return Finish(
        request.job_id,
        epoch,
        request.batch_id,
        JobState.RUNNING,
        {"state": JobState.SUCCEEDED},
        frame.model_dump_json(),
    )


def _report(into: list[str], job_id: str) -> Callable[[], None]:
    return lambda: into.append(job_id)


def _never() -> None:
    raise AssertionError("reported superseded")
