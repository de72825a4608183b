"""Redis connections are blocking pools sized to what a process holds: a client's streams
past its pool wait for a connection, and a worker of 256 slots runs them all at once, where
redis-py's default pool (100 connections, MaxConnectionsError past them) failed jobs and
lease renewals."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from genq import Client
from genq.common.settings import Settings
from genq.producer.handles import JobHandle
from ops.localstack import Relay, Worker
from tests.integration.conftest import Stack

STREAMS = 6
SLOTS, JOBS = 256, 300


def followed(job: JobHandle) -> tuple[str, str]:
    """A job's text as its stream told it, and its result's."""
    with job.stream(timeout=60) as stream:
        for _ in stream:
            pass
        return stream.text, stream.result.text


def test_streams_past_the_pool_s_connections_wait_for_one(
    settings: Settings, worker: Worker, relay: Relay
) -> None:
    with Client(settings, pool_size=2) as client:
        jobs = [
            client.submit("a", model="tiny", max_tokens=24, seed=n, ignore_eos=True)
            for n in range(STREAMS)
        ]
        with ThreadPoolExecutor(STREAMS) as pool:
            texts = list(pool.map(followed, jobs))
    assert len(texts) == STREAMS
    for streamed, result in texts:
        assert streamed == result and result


def test_a_worker_of_256_slots_runs_every_job(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.relay(), stack.worker("wide", "--models", "tiny", "--slots", str(SLOTS))
    with Client(stack.settings) as client:
        # One by one: a batch would bundle such short jobs, several to a task message.
        jobs = [
            client.submit("a", model="tiny", max_tokens=64, seed=n, ignore_eos=True)
            for n in range(JOBS)
        ]
        results = [job.result(timeout=300) for job in jobs]
    assert [result.usage.completion_tokens for result in results if result.usage] == [64] * JOBS
