"""Redis killed and restarted from its append-only file mid-batch: no accepted job is lost,
every job completes with its text, and the client's readers (`wait()`, `results()`,
`stream()`) ride through with the default GENQ_REDIS_RETRY_S. With GENQ_REDIS_RETRY_S=0 they
raise RedisUnavailable at once, and after their budget otherwise.

Each test has a redis-server of its own (the session's must not be killed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from genq import AsyncClient, Client, JobState, RedisUnavailable
from genq.common.settings import Settings
from genq.common.store import run, streams
from ops.localstack import RedisServer, settings_for, wait_for
from tests.integration.conftest import Stack

LINE: dict[str, Any] = {"max_tokens": 800, "window_tokens": 100, "ignore_eos": True}
LONG: dict[str, Any] = {**LINE, "prompt": "restart", "max_tokens": 4000, "seed": 99}
OUTAGE_S = 3.0  # how long Redis stays down: the fault itself, not a wait for a condition


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(persist=True, workdir=tmp_path / "redis").start()
    yield server
    server.stop()


def kill(server: RedisServer) -> None:
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()


def restart(server: RedisServer) -> None:
    """SIGKILL, then after OUTAGE_S start again on the same port from the append-only file."""
    kill(server)
    time.sleep(OUTAGE_S)
    server.spawn().wait_ready()


def read_stream(client: Client, job_id: str) -> str:
    with client.job(job_id).stream(timeout=120) as stream:
        for _ in stream:
            pass
    assert stream.text == stream.result.text
    return stream.text


async def read_stream_async(settings: Settings, job_id: str) -> str:
    async with AsyncClient(settings) as client:
        stream = (await client.job(job_id)).stream(timeout=120)
        async for _ in stream:
            pass
        return stream.text


async def wait_and_read_async(settings: Settings, batch_id: str) -> tuple[int, list[str]]:
    """The async batch handle's wait and results, across the outage."""
    async with AsyncClient(settings) as client:
        batch = await client.batch(batch_id)
        status = await batch.wait(timeout=120)
        return status.succeeded, [line.custom_id async for line in batch.results()]


def test_readers_ride_through_a_redis_restart_mid_batch(
    genq_env: dict[str, str], own_redis: RedisServer, tmp_path: Path
) -> None:
    # The worker gives up the job it runs when Redis goes (its writes fail); the job's lease
    # lapses and it resumes once Redis is back: the session's short leases keep this quick.
    stack = Stack({**genq_env, "GENQ_REDIS_URL": own_redis.url}, tmp_path)
    try:
        stack.relay(), stack.worker("a")
        with Client(stack.settings) as client, ThreadPoolExecutor(5) as pool:
            job = client.submit(**LONG, priority=9)  # runs first, across the outage
            lines = [
                {"custom_id": f"c{i}", "prompt": f"line {i}", "seed": i, **LINE} for i in range(6)
            ]
            batch = client.submit_batch(lines)
            waited = pool.submit(batch.wait, 120)
            results = pool.submit(lambda: list(batch.results()))
            streamed = pool.submit(read_stream, client, job.job_id)
            run_async = asyncio.run  # the async client, in a thread of its own
            streamed_async = pool.submit(run_async, read_stream_async(stack.settings, job.job_id))
            batch_async = pool.submit(
                run_async, wait_and_read_async(stack.settings, batch.batch_id)
            )
            stream_key = client.keys.stream(job.job_id)
            wait_for(lambda: client.redis.xlen(stream_key) >= 20, 60, "the long job to run")
            restart(own_redis)
            assert waited.result(timeout=120).succeeded == len(lines)
            lines_read = results.result(timeout=60)
            text = streamed.result(timeout=60)
            assert streamed_async.result(timeout=60) == text
            assert [line.custom_id for line in lines_read] == [f"c{i}" for i in range(6)]
            assert batch_async.result(timeout=60) == (len(lines), [f"c{i}" for i in range(6)])
            assert all(line.status == "succeeded" for line in lines_read)
            assert all(
                line.usage is not None and line.usage.completion_tokens == 800
                for line in lines_read
            )
            assert text == client.submit(**LONG).result(timeout=60).text  # as uninterrupted
    finally:
        stack.stop()


def test_readers_raise_redis_unavailable_once_their_retry_budget_is_spent(
    genq_env: dict[str, str], own_redis: RedisServer
) -> None:
    env = {**genq_env, "GENQ_REDIS_URL": own_redis.url}
    with Client(settings_for({**env, "GENQ_REDIS_RETRY_S": "0"})) as client:
        batch = client.submit_batch([{"custom_id": "a", "prompt": "x", "max_tokens": 4}])
        job = client.submit("x", max_tokens=4)  # no worker runs: both stay queued
        kill(own_redis)
        reads: dict[str, Callable[[], object]] = {
            "wait": lambda: batch.wait(timeout=30),
            "results": lambda: list(batch.results()),
            "stream": lambda: list(client.job(job.job_id, check=False).stream(timeout=30)),
            "result": lambda: job.result(timeout=30),
        }
        for name, read in reads.items():
            started = time.monotonic()
            with pytest.raises(RedisUnavailable):
                read()
            assert time.monotonic() - started < 10, name  # not the default 30 s of retries
    with Client(settings_for({**env, "GENQ_REDIS_RETRY_S": "1.5"})) as client:
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            client.job(job.job_id, check=False).result(timeout=30)
        assert 1.5 <= time.monotonic() - started < 15  # its budget, not the default 30 s
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            asyncio.run(wait_and_read_async(client.settings, batch.batch_id))
        assert 1.5 <= time.monotonic() - started < 15  # its budget, not the default 30 s


def streaming(client: Client, job_ids: list[str], frames: int) -> Callable[[], bool]:
    def every_job_streams() -> bool:
        return all(
            len(run(client.redis, streams.raw_frames(client.keys, job_id))) >= frames
            for job_id in job_ids
        )

    return every_job_streams


def test_a_slots_worker_rides_through_redis_killed_under_its_running_jobs(
    genq_env: dict[str, str], own_redis: RedisServer, tmp_path: Path
) -> None:
    """kombu's Redis transport used to stop the worker here ("Unrecoverable error:
    AttributeError: 'NoneType' object has no attribute 'hostname'": see
    genq.common.adapters.kombu_redis). Now its attempts are abandoned when Redis goes, not
    failed; once Redis is back the jobs resume from their streams, on the same worker (the
    only one), which has reconnected and serves new jobs too."""
    stack = Stack({**genq_env, "GENQ_REDIS_URL": own_redis.url}, tmp_path)
    try:
        stack.relay()
        worker = stack.worker("a", "--models", "tiny", "--slots", "16")
        with Client(stack.settings) as client:
            specs = [{**LONG, "prompt": f"slot {i}", "seed": i} for i in range(10)]
            jobs = [client.submit(**spec) for spec in specs]
            wait_for(streaming(client, [j.job_id for j in jobs], 3), 60, "ten jobs to stream")
            restart(own_redis)
            texts = [job.result(timeout=240).text for job in jobs]
            assert worker.proc is not None and worker.proc.poll() is None, "see a.log"
            assert [read_stream(client, job.job_id) for job in jobs] == texts
            assert {client.record(job.job_id).state for job in jobs} == {JobState.SUCCEEDED}
            assert all(len(text) > 0 for text in texts)
            # As uninterrupted: the same jobs again, on the worker that lived through it.
            again = [client.submit(**spec) for spec in specs[:2]]
            assert [job.result(timeout=240).text for job in again] == texts[:2]
            assert client.record(again[0].job_id).worker.startswith("a@")
    finally:
        stack.stop()
