"""The store's executors against a real Redis: the sync and async faces run the same commands
and answer the same."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio

from genq.common.ids import new_job_id
from genq.common.schemas import JobRecord, JobSpec, JobState
from genq.common.settings import Settings
from genq.common.store import arun, arun_all, jobs, run, run_all
from genq.common.store.keys import Keys

KEYS = Keys()


def _record() -> JobRecord:
    return JobRecord(
        spec=JobSpec(prompt="x"), state=JobState.QUEUED, queue="cpu.tiny", submitted_ms=1
    )


def test_the_sync_executor_writes_and_reads_a_job_in_one_pipeline(
    redis_client: redis.Redis,
) -> None:
    job_id, missing = new_job_id(), new_job_id()
    run(redis_client, jobs.write(KEYS, job_id, _record(), ttl_s=60))
    found, records = run_all(
        redis_client, [jobs.exists(KEYS, job_id), jobs.read_many(KEYS, [job_id, missing])]
    )
    assert (found, records) == (True, [_record(), None])
    assert 0 < redis_client.ttl(jobs.record_key(KEYS, job_id)) <= 60
    run(redis_client, jobs.delete(KEYS, job_id))
    assert run(redis_client, jobs.read(KEYS, job_id)) is None


def test_the_async_executor_answers_as_the_sync_one(settings: Settings) -> None:
    job_id = new_job_id()

    async def main() -> tuple[object, ...]:
        r = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
        try:
            await arun(r, jobs.write(KEYS, job_id, _record(), ttl_s=60))
            await arun(r, jobs.mark_dispatched(KEYS, [job_id]))
            await arun(r, jobs.request_cancel(KEYS, job_id, ttl_s=60))
            return tuple(
                await arun_all(r, [jobs.read(KEYS, job_id), jobs.cancel_requested(KEYS, job_id)])
            )
        finally:
            await r.aclose()

    record, cancelled = asyncio.run(main())
    assert record == _record()
    assert cancelled is True
