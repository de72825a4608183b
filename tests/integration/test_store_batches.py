"""The batch store's commands against a real Redis: SUBMIT creates each custom_id once, keeps
the batch's record, list and index, and takes no job once the batch was cancelled; the async
face reads what the sync one wrote."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio

from genq.common.ids import new_batch_id, new_job_id
from genq.common.schemas import BatchStatus, JobRecord, JobSpec, JobState
from genq.common.settings import Settings
from genq.common.store import arun, arun_all, batches, jobs, run, run_all, run_transaction
from genq.common.store.batches import NewJob, Opening
from genq.common.store.keys import Keys

KEYS = Keys()


def _record(batch_id: str, custom_id: str) -> JobRecord:
    return JobRecord(
        spec=JobSpec(prompt="x"),
        state=JobState.QUEUED,
        queue="cpu.tiny",
        submitted_ms=1,
        batch_id=batch_id,
        custom_id=custom_id,
    )


def _submit(r: redis.Redis, batch_id: str, new: list[NewJob], opening: Opening | None) -> object:
    command = batches.submit(KEYS, batch_id, new, ttl_s=60, opening=opening)
    return run_transaction(r, [command])[0]


def test_submit_creates_each_custom_id_once_and_stops_once_the_batch_is_cancelled(
    redis_client: redis.Redis,
) -> None:
    bid = new_batch_id()
    first = [NewJob(c, new_job_id(), _record(bid, c)) for c in ("a", "b")]
    assert _submit(redis_client, bid, first, Opening(5, 7, 0)) == {j.job_id for j in first}
    again = [
        NewJob("b", new_job_id(), _record(bid, "b")),
        NewJob("c", new_job_id(), _record(bid, "c")),
    ]
    assert _submit(redis_client, bid, again, None) == {again[1].job_id}

    status, ids, found, record = run_all(
        redis_client,
        [
            batches.status(KEYS, bid),
            batches.job_ids(KEYS, bid, 0, 10),
            batches.job_ids_of(KEYS, bid, ["b", "zz"]),
            jobs.read(KEYS, first[0].job_id),
        ],
    )
    assert status == BatchStatus(
        batch_id=bid, total=3, queued=3, priority=7, created_ms=5, expires_ms=0
    )
    assert ids == [first[0].job_id, first[1].job_id, again[1].job_id]
    assert found == [first[1].job_id]
    assert record == _record(bid, "a")
    assert 0 < redis_client.ttl(batches.record_key(KEYS, bid)) <= 60

    run(redis_client, batches.request_cancel(KEYS, bid))
    late = [NewJob("d", new_job_id(), _record(bid, "d"))]
    assert _submit(redis_client, bid, late, None) is None
    assert redis_client.hget(batches.record_key(KEYS, bid), "cancel_requested") == "1"


def test_the_async_face_reads_a_batch_as_the_sync_one(
    redis_client: redis.Redis, settings: Settings
) -> None:
    bid = new_batch_id()
    new = [NewJob("a", new_job_id(), _record(bid, "a"))]
    _submit(redis_client, bid, new, Opening(5, 7, 0))
    redis_client.hset(
        batches.record_key(KEYS, bid), "cancel_requested", "True"
    )  # written by genq before 1

    async def main() -> list[object]:
        r = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
        try:
            return await arun_all(r, [batches.status(KEYS, bid), batches.job_ids(KEYS, bid, 0, 10)])
        finally:
            await r.aclose()

    status, ids = asyncio.run(main())
    assert isinstance(status, BatchStatus) and status.cancel_requested
    assert status == run(redis_client, batches.status(KEYS, bid))
    assert ids == [new[0].job_id]
    assert asyncio.run(_async_missing(settings)) is None


async def _async_missing(settings: Settings) -> BatchStatus | None:
    r = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        return await arun(r, batches.status(KEYS, new_batch_id()))
    finally:
        await r.aclose()
