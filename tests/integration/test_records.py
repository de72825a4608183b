"""`Client.record` and `AsyncClient.record`: a job's record from any process, through the
public API (what `genq status` and `genq run` read)."""

from __future__ import annotations

import asyncio

import pytest

from genq import AsyncClient, Client, InvalidJob, JobRecord, JobState, Settings

UNKNOWN_JOB = "0123456789abcdef0123456789abcdef"


def test_record_shows_a_submitted_job_to_both_clients(settings: Settings) -> None:
    with Client(settings) as client:
        job = client.submit("Once upon a time", max_tokens=4, priority=7, seed=3)
        try:
            record = client.record(job.job_id)
            async_record = asyncio.run(_record_async(settings, job.job_id))
        finally:
            client.cancel(job.job_id)  # no worker need spend time on it
    assert isinstance(record, JobRecord)
    assert (record.spec.prompt, record.spec.seed, record.priority) == ("Once upon a time", 3, 7)
    assert record.queue == "cpu.tiny" and record.state != JobState.FAILED
    assert async_record.spec == record.spec and async_record.submitted_ms == record.submitted_ms


def test_record_of_an_unknown_job_is_invalid_job_on_both_clients(settings: Settings) -> None:
    with Client(settings) as client, pytest.raises(InvalidJob, match=f"no job {UNKNOWN_JOB}"):
        client.record(UNKNOWN_JOB)
    with pytest.raises(InvalidJob, match=f"no job {UNKNOWN_JOB}"):
        asyncio.run(_record_async(settings, UNKNOWN_JOB))


async def _record_async(settings: Settings, job_id: str) -> JobRecord:
    async with AsyncClient(settings) as client:
        return await client.record(job_id)
