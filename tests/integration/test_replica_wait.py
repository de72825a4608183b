"""GENQ_REDIS_WAIT_REPLICAS: a submit returns only once a replica holds the job's record and
its task message, and a submit no replica confirms raises RedisUnavailable, saying so. A
primary and its replica on loopback; no worker runs, so the jobs stay queued where they are
read."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import redis

from genq import Client, RedisUnavailable
from genq.common.routing import queue_name
from genq.common.settings import Settings
from genq.common.store import jobs, queues, run
from genq.common.store.keys import Keys
from ops.localstack import RedisServer, settings_for, wait_for

JOBS = 20


@pytest.fixture(scope="module")
def primary_and_replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A primary, and its replica once in sync: the replica is yielded, the primary is its
    `replicaof`."""
    root = tmp_path_factory.mktemp("replicated")
    primary = RedisServer(workdir=root / "primary").start()
    replica = RedisServer(
        workdir=root / "replica", args=("--replicaof", primary.host, str(primary.port))
    ).start()
    link = redis.Redis(replica.host, replica.port)
    wait_for(lambda: link.info("replication")["master_link_status"] == "up", 30, "the replica")
    replica.primary = primary  # type: ignore[attr-defined]
    yield replica
    replica.stop()
    primary.stop()


def settings_of(genq_env: dict[str, str], server: RedisServer, **more: str) -> Settings:
    return settings_for({**genq_env, "GENQ_REDIS_URL": server.url, **more})


def test_an_acknowledged_submit_is_on_the_replica(
    genq_env: dict[str, str], primary_and_replica: RedisServer
) -> None:
    primary: RedisServer = primary_and_replica.primary  # type: ignore[attr-defined]
    settings = settings_of(genq_env, primary, GENQ_REDIS_WAIT_REPLICAS="1")
    keys = Keys(settings.key_prefix)
    replica = redis.Redis(primary_and_replica.host, primary_and_replica.port)
    queue = queue_name("cpu", "tiny")
    before = run(replica, queues.depth(queue))
    with Client(settings) as client:
        for n in range(JOBS):
            job = client.submit("a", model="tiny", max_tokens=4, seed=n)
            # Read on the replica the moment the submit returned: no wait for replication.
            assert run(replica, jobs.exists(keys, job.job_id))
            assert run(replica, queues.depth(queue)) == before + n + 1
        batch = client.submit_batch(
            [{"custom_id": f"b{n}", "prompt": "b", "model": "tiny"} for n in range(JOBS)]
        )
        held = [run(replica, jobs.exists(keys, job.job_id)) for job in batch.jobs()]
    assert held == [True] * JOBS


def test_a_submit_too_few_replicas_confirm_raises(
    genq_env: dict[str, str], primary_and_replica: RedisServer
) -> None:
    primary: RedisServer = primary_and_replica.primary  # type: ignore[attr-defined]
    asked = {"GENQ_REDIS_WAIT_REPLICAS": "2", "GENQ_REDIS_WAIT_MS": "200"}
    refused = pytest.raises(RedisUnavailable, match=r"1 of the 2 replicas .* within 200 ms")
    with Client(settings_of(genq_env, primary, **asked)) as client, refused:
        client.submit("a", model="tiny", max_tokens=4)


def test_while_the_replica_is_stopped_a_submit_is_not_acknowledged(
    genq_env: dict[str, str], primary_and_replica: RedisServer
) -> None:
    """Without the setting the submit returns, and a failover then could lose it."""
    primary: RedisServer = primary_and_replica.primary  # type: ignore[attr-defined]
    replica = primary_and_replica.proc
    assert replica is not None
    asked = {"GENQ_REDIS_WAIT_REPLICAS": "1", "GENQ_REDIS_WAIT_MS": "200"}
    with Client(settings_of(genq_env, primary, **asked)) as waiting:
        with Client(settings_of(genq_env, primary)) as plain:
            replica.send_signal(signal.SIGSTOP)
            try:
                plain.submit("a", model="tiny", max_tokens=4)  # acknowledged by the primary alone
                with pytest.raises(RedisUnavailable, match=r"0 of the 1 replicas"):
                    waiting.submit("a", model="tiny", max_tokens=4)
            finally:
                replica.send_signal(signal.SIGCONT)
        assert waiting.submit("a", model="tiny", max_tokens=4).job_id  # confirmed again
