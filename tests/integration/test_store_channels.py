"""genq.common.store.channels and the transaction runners against a real Redis: a published
message reaches a subscriber of either face, a pattern subscription reads payloads in bulk as
bytes, and a transaction's writes land together."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from genq.common.ids import new_job_id
from genq.common.schemas import JobRecord, JobSpec, JobState
from genq.common.settings import Settings
from genq.common.store import (
    arun,
    arun_transaction,
    channels,
    jobs,
    leases,
    run,
    run_transaction,
    streams,
)
from genq.common.store.keys import Keys

# A prefix of its own: no relay of the session subscribes to these channels.
KEYS = Keys(f"channels-{new_job_id()[:8]}")


def _record() -> JobRecord:
    spec = JobSpec(prompt="x")
    return JobRecord(spec=spec, state=JobState.QUEUED, queue="cpu.tiny", submitted_ms=1)


def test_a_subscriber_hears_what_is_published_after_it_subscribed(
    redis_client: redis.Redis,
) -> None:
    channel = streams.channel(KEYS, new_job_id())
    subscription = channels.subscribe(redis_client, channel)
    try:
        assert run(redis_client, channels.publish(channel, "one")) == 1  # one subscriber
        assert subscription.message(10) == "one"
        assert subscription.message(0) is None  # nothing more came
    finally:
        subscription.close()
    assert run(redis_client, channels.publish(channel, "unheard")) == 0


def test_an_async_subscriber_hears_what_is_published(settings: Settings) -> None:
    channel = streams.channel(KEYS, new_job_id())

    async def main() -> tuple[int, str | None]:
        client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
        subscription = await channels.asubscribe(client, channel)
        heard = await arun(client, channels.publish(channel, "one"))
        message = await subscription.message(10)
        await subscription.aclose()
        await client.aclose()
        return heard, message

    assert asyncio.run(main()) == (1, "one")


def test_a_pattern_subscription_reads_every_matching_channel_as_bytes(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)  # no decoding, as the relay's
    prefix = Keys(f"t{new_job_id()[:8]}")
    frames = channels.psubscribe(client, streams.channel_pattern(prefix))
    try:
        for n, job_id in enumerate((new_job_id(), new_job_id())):
            run(client, channels.publish(streams.channel(prefix, job_id), f"frame {n}"))
        other = Keys(f"u{new_job_id()[:8]}")
        run(client, channels.publish(streams.channel(other, new_job_id()), "another prefix"))
        read: list[bytes] = []
        while len(read) < 2:
            batch = frames.read(10, 100)
            assert batch, "no frame within 10 s"
            read += batch
        assert read == [b"frame 0", b"frame 1"]
    finally:
        frames.close()
        client.close()


def test_a_transaction_writes_a_job_and_its_expiry_together(redis_client: redis.Redis) -> None:
    job_id, record = new_job_id(), _record()
    values = run_transaction(
        redis_client,
        [jobs.write(KEYS, job_id, record, ttl_s=60), leases.add_expiry(KEYS, job_id, 5)],
    )
    assert values == [None, None]
    assert run(redis_client, jobs.read(KEYS, job_id)) == record
    assert run(redis_client, leases.due_expiries(KEYS, 5, 100_000)).count(job_id) == 1
    run(redis_client, leases.drop_expiry(KEYS, job_id))


def test_a_refused_command_in_a_transaction_raises_redis_own_error(
    redis_client: redis.Redis,
) -> None:
    job_id = new_job_id()
    run(redis_client, streams.append(KEYS, job_id, "1-2", "{}"))
    with pytest.raises(redis.ResponseError, match="equal or smaller"):
        run_transaction(redis_client, [streams.append(KEYS, job_id, "1-1", "{}")])


def test_the_async_transaction_returns_each_commands_value(settings: Settings) -> None:
    job_id = new_job_id()

    async def main() -> list[object]:
        client = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
        values = await arun_transaction(
            client,
            [streams.append(KEYS, job_id, "1-1", "{}"), streams.length(KEYS, job_id)],
        )
        await client.aclose()
        return values

    assert asyncio.run(main()) == ["1-1", 1]
