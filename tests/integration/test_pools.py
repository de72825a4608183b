"""A client's Redis connections are a blocking pool: more streams read at once than it has
connections wait for one, rather than failing as redis-py's default pool fails
(MaxConnectionsError) once its connections are all in use."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from genq import Client
from genq.common.settings import Settings
from genq.producer.handles import JobHandle
from ops.localstack import Relay, Worker

STREAMS = 6


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
