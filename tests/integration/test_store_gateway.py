"""genq.common.store.gateway against a real Redis: a stream's meta round-trips with the job's
retention, a submitted job's records are written in one step, and a due job is claimed for
cancelling once, only while no client is attached."""

from __future__ import annotations

import redis

from genq.common.ids import new_job_id
from genq.common.store import gateway, run
from genq.common.store.gateway import StreamMeta
from genq.common.store.keys import Keys

KEYS = Keys("gwtest")


def test_a_streams_meta_round_trips_and_expires_with_the_job(redis_client: redis.Redis) -> None:
    job_id, meta = new_job_id(), StreamMeta("chat", "tiny", 1_700_000_000, include_usage=True)
    run(redis_client, gateway.save(KEYS, job_id, meta, ttl_s=60))
    assert run(redis_client, gateway.read(KEYS, job_id)) == meta
    assert 0 < redis_client.ttl(gateway.meta_key(KEYS, job_id)) <= 60
    assert run(redis_client, gateway.read(KEYS, new_job_id())) is None


def test_a_due_job_is_claimed_once_and_only_with_no_client(redis_client: redis.Redis) -> None:
    attached, left = new_job_id(), new_job_id()
    run(redis_client, gateway.set_deadline(KEYS, attached, 1000))
    assert run(redis_client, gateway.attach(KEYS, attached)) == 1
    assert run(redis_client, gateway.deadlines(KEYS, [attached])) == [None]  # attach took it off
    run(redis_client, gateway.set_deadline(KEYS, attached, 1000))  # a detach raced the attach
    run(redis_client, gateway.attach(KEYS, left))
    assert run(redis_client, gateway.detach(KEYS, left)) == 0
    run(redis_client, gateway.set_deadline(KEYS, left, 1000))
    due: list[str] = run(redis_client, gateway.due(KEYS, 2000, 10))
    assert sorted(due) == sorted([attached, left])
    assert run(redis_client, gateway.due(KEYS, 999, 10)) == []
    assert not run(redis_client, gateway.claim(KEYS, attached))  # a client is on it
    assert run(redis_client, gateway.claim(KEYS, left))
    assert not run(redis_client, gateway.claim(KEYS, left))  # another gateway came second
    assert run(redis_client, gateway.due(KEYS, 2000, 10)) == []


def test_a_submitted_jobs_records_count_its_client_or_set_its_deadline(
    redis_client: redis.Redis,
) -> None:
    waiting, streamed = new_job_id(), new_job_id()
    meta = StreamMeta("completion", "tiny", 1_700_000_000, include_usage=False)
    run(redis_client, gateway.start(KEYS, waiting, meta, ttl_s=60, attached=1))
    run(redis_client, gateway.start(KEYS, streamed, meta, ttl_s=60, deadline_ms=5000))
    assert run(redis_client, gateway.read(KEYS, waiting)) == meta
    assert run(redis_client, gateway.deadlines(KEYS, [waiting, streamed])) == [None, 5000.0]
    assert run(redis_client, gateway.detach(KEYS, waiting)) == 0  # the one counted
    assert run(redis_client, gateway.attach(KEYS, streamed)) == 1
    assert run(redis_client, gateway.deadlines(KEYS, [streamed])) == [None]
