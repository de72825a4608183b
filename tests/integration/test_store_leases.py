"""genq.common.store.leases against a real Redis: a job's lifecycle through the scripts, read back
as typed values, on both executors."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio

from genq.common.ids import new_job_id
from genq.common.schemas import JobRecord, JobSpec, JobState
from genq.common.settings import Settings
from genq.common.store import arun, indexes, jobs, leases, run
from genq.common.store.keys import Keys
from genq.common.store.leases import Claimed, ClaimOutcome, Ending, ReapAction

# A prefix of its own: the session's relay reaps and expires only genq's indexes.
KEYS = Keys("storeleases")
NOW = 1_000_000
LEASE_MS = 2_000


def _queued() -> JobRecord:
    return JobRecord(
        spec=JobSpec(prompt="x"),
        state=JobState.QUEUED,
        queue="cpu.tiny",
        submitted_ms=1,
        expires_ms=NOW + 60_000,
    )


def _claim_async(settings: Settings, job_id: str, epoch: int) -> Claimed:
    async def main() -> Claimed:
        r = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
        try:
            command = leases.claim(KEYS, [(job_id, epoch)], "w2", NOW + 10_000, LEASE_MS)
            [claimed] = await arun(r, command)
            return claimed
        finally:
            await r.aclose()

    return asyncio.run(main())


def test_a_job_is_claimed_renewed_reaped_reclaimed_and_finished_once(
    redis_client: redis.Redis, settings: Settings
) -> None:
    job_id = new_job_id()
    run(redis_client, jobs.write(KEYS, job_id, _queued(), ttl_s=60))
    run(redis_client, leases.add_expiry(KEYS, job_id, NOW + 60_000))

    [first, again] = run(
        redis_client, leases.claim(KEYS, [(job_id, 0), (job_id, 0)], "w1", NOW, LEASE_MS)
    )
    assert first.outcome is ClaimOutcome.CLAIMED and first.record is not None
    assert (first.record.state, first.record.worker, first.record.attempts) == ("running", "w1", 1)
    assert (again.outcome, again.record) == (ClaimOutcome.HELD, None)
    assert redis_client.zscore(indexes.leases_key(KEYS), job_id) == NOW + LEASE_MS
    assert (
        redis_client.zscore(indexes.expiries_key(KEYS), job_id) is None
    )  # a started job never expires

    renewal = leases.renew(KEYS, [(job_id, 0), (job_id, 1)], NOW + 5_000)
    assert run(redis_client, renewal) == [True, False]  # epoch 1 is not the running attempt
    live = leases.reap(KEYS, job_id, "", NOW + 4_000, 3, 500, 60)
    assert run(redis_client, live).action is ReapAction.LIVE

    reaped = run(redis_client, leases.reap(KEYS, job_id, "", NOW + 6_000, 3, 500, 60))
    assert (reaped.action, reaped.epoch, reaped.queue, reaped.attempts) == (
        ReapAction.REQUEUE,
        1,
        "cpu.tiny",
        1,
    )
    assert _claim_async(settings, job_id, 0).outcome is ClaimOutcome.STALE
    assert _claim_async(settings, job_id, 1).outcome is ClaimOutcome.CLAIMED

    ending = Ending(job_id, 1, "", JobState.RUNNING, {"state": "failed"}, "{}")
    assert run(redis_client, leases.finish(KEYS, ending, 60, NOW + 20_000)) is True
    assert run(redis_client, leases.finish(KEYS, ending, 60, NOW + 20_000)) is False
    assert redis_client.zscore(indexes.leases_key(KEYS), job_id) is None
    record = run(redis_client, jobs.read(KEYS, job_id))
    assert record is not None and record.state is JobState.FAILED
