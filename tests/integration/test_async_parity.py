"""The async face against the real stack: the same batches, cancels and merged streams as the
sync face, with the same answers; and batch waits that wake on Redis, not on a clock."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from genq import (
    AsyncBatchHandle,
    AsyncClient,
    AsyncJobHandle,
    CancelReport,
    Client,
    ResultLine,
    Settings,
)
from genq.common.frames import TokenFrame
from genq.common.schemas import BatchStatus, FinishReason, JobState
from genq.common.store import batches
from ops.localstack import wait_for
from tests.state import stream_length

from .test_batches import ENDLESS, MIXED

# A bounded wait far longer than any test here: a wait that returns sooner was woken.
NEVER_S = 60.0
# Short jobs, and a last one long enough (about a second) that a wait starts before it ends.
LINES: list[dict[str, Any]] = [
    *({"custom_id": str(i), "prompt": "p", "max_tokens": 8, "seed": i} for i in range(4)),
    {"custom_id": "last", "prompt": "p", "max_tokens": 1500, "ignore_eos": True},
]


def test_async_batch_runs_to_results_in_input_order_the_same_as_the_sync_faces(
    client: Client, settings: Settings
) -> None:
    seen: list[tuple[int, int]] = []

    async def main() -> tuple[AsyncBatchHandle[AsyncJobHandle], BatchStatus, list[ResultLine]]:
        loop_thread = threading.get_ident()
        async with AsyncClient(settings) as aclient:
            batch = await aclient.submit_batch(
                MIXED, progress=lambda n: seen.append((n, threading.get_ident() - loop_thread))
            )
            status = await batch.wait(timeout=60)
            return batch, status, [line async for line in batch.results()]

    batch, status, lines = asyncio.run(main())
    assert batch.submission.created == len(MIXED) and batch.rejects == []
    assert seen and seen[-1] == (len(MIXED), 0)  # on the event loop's thread
    assert (status.total, status.succeeded, status.state) == (4, 4, "completed")
    assert [line.custom_id for line in lines] == [m["custom_id"] for m in MIXED]
    assert {line.status for line in lines} == {JobState.SUCCEEDED}
    sync = client.batch(batch.batch_id)
    assert list(sync.results()) == lines
    assert sync.status() == status


def test_async_batch_handle_attaches_by_id_and_lists_its_jobs(
    client: Client, settings: Settings
) -> None:
    sync = client.submit_batch(MIXED[:2])

    async def main() -> tuple[list[str], list[str], int]:
        async with AsyncClient(settings) as aclient:
            batch = await aclient.batch(sync.batch_id)
            ids = [job_id async for job_id in batch.job_ids()]
            jobs = [job.job_id async for job in batch.jobs()]
            return ids, jobs, (await batch.wait(timeout=60)).total

    ids, jobs, total = asyncio.run(main())
    assert ids == jobs == list(sync.job_ids()) and total == 2


def test_async_cancel_of_a_batch_reports_what_the_sync_cancel_reports(
    client: Client, settings: Settings
) -> None:
    lines: list[dict[str, Any]] = [
        {"custom_id": "first", "prompt": "short", "max_tokens": 4, "ignore_eos": True}
    ]
    lines += [{"custom_id": f"long-{i}", **ENDLESS} for i in range(4)]

    async def main() -> tuple[CancelReport, CancelReport, BatchStatus, list[ResultLine]]:
        async with AsyncClient(settings) as aclient:
            batch = await aclient.submit_batch(lines)
            ids = [job_id async for job_id in batch.job_ids()]
            long_job = ids[1]
            await asyncio.to_thread(
                wait_for,
                lambda: stream_length(client.redis, client.keys, long_job) >= 5,
                30,
                "the long job's frames",
            )
            report = await aclient.cancel(batch.batch_id)
            status = await batch.wait(timeout=30)
            again = await batch.cancel()
            return report, again, status, [line async for line in batch.results()]

    report, again, status, results = asyncio.run(main())
    # as `genq cancel` (Client.cancel) reports it in test_batches
    assert report == CancelReport(not_started=3, signalled=1, already_ended=1)
    assert (status.succeeded, status.cancelled, status.state) == (1, 4, "cancelled")
    assert again == client.cancel(status.batch_id) == CancelReport(0, 0, 5)
    assert results[1].finish_reason == FinishReason.CANCELLED and results[1].text
    assert [line.text for line in results[2:]] == ["", "", ""]


def test_async_cancel_of_a_job_reports_what_the_sync_cancel_reports(
    client: Client, settings: Settings
) -> None:
    async def main() -> tuple[CancelReport, CancelReport, str]:
        async with AsyncClient(settings) as aclient:
            job = await aclient.submit(**ENDLESS)
            await asyncio.to_thread(
                wait_for,
                lambda: stream_length(client.redis, client.keys, job.job_id) >= 3,
                30,
                "frames",
            )
            running = await aclient.cancel(job.job_id)
            await job.result(timeout=30)
            return running, await job.cancel(), job.job_id

    running, ended, job_id = asyncio.run(main())
    assert running == CancelReport(not_started=0, signalled=1, already_ended=0)
    assert ended == client.cancel(job_id) == CancelReport(0, 0, 1)


def test_async_stream_many_merges_several_jobs_frames_tagged_by_job(settings: Settings) -> None:
    async def main() -> list[tuple[str, str, int]]:
        async with AsyncClient(settings) as aclient:
            jobs = [
                await aclient.submit(f"merge {i}", max_tokens=30, seed=i, ignore_eos=True)
                for i in range(3)
            ]
            texts = {job.job_id: "" for job in jobs}
            async for job, frame in aclient.stream_many(jobs, timeout=60):
                if isinstance(frame, TokenFrame):
                    texts[job.job_id] += frame.data.text
            results = [await job.result() for job in jobs]
            return [
                (texts[j.job_id], r.text, r.usage.completion_tokens)
                for j, r in zip(jobs, results, strict=True)
            ]

    for streamed, text, tokens in asyncio.run(main()):
        assert streamed == text and tokens == 30


def test_a_batch_wait_returns_as_soon_as_the_last_job_ends_not_at_its_next_poll(
    client: Client,
) -> None:
    batch = client.submit_batch(LINES)
    reads: list[BatchStatus] = []
    started = time.monotonic()
    status = batch.wait(timeout=NEVER_S, progress=reads.append, poll_s=NEVER_S)
    returned_ms = time.time_ns() // 1_000_000
    assert status.complete and time.monotonic() - started < NEVER_S
    assert not reads[0].complete  # it did wait
    # Woken by the last job's FINISH, not by a read after poll_s (NEVER_S): the bound only
    # tells the two apart, with room for a loaded machine (speed belongs in ops/bench).
    assert returned_ms - status.finished_ms < NEVER_S * 1000 / 4
    assert len(reads) <= 1 + status.total  # one read per announced ending, no polling
    lines = list(batch.results(poll_s=NEVER_S))
    assert [line.custom_id for line in lines] == [line["custom_id"] for line in LINES]


def test_an_async_batch_wait_and_results_wake_on_each_ending_too(settings: Settings) -> None:
    async def main() -> tuple[BatchStatus, int, list[str], list[BatchStatus]]:
        async with AsyncClient(settings) as aclient:
            batch = await aclient.submit_batch(LINES)
            reads: list[BatchStatus] = []
            status = await batch.wait(timeout=NEVER_S, progress=reads.append, poll_s=NEVER_S)
            returned_ms = time.time_ns() // 1_000_000
            ids = [line.custom_id async for line in batch.results(poll_s=NEVER_S)]
            return status, returned_ms - status.finished_ms, ids, reads

    status, late_ms, ids, reads = asyncio.run(main())
    assert ids == [line["custom_id"] for line in LINES]
    assert not reads[0].complete and status.complete
    assert late_ms < NEVER_S * 1000 / 4 and len(reads) <= 1 + status.total


def test_a_batch_wait_that_hears_no_announcement_still_returns_after_one_bounded_wait(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """An ending that announces nothing (the reaper failing a job whose attempts are spent
    moves the batch's counts without FINISH) is seen by the read after `poll_s`."""
    with Client(settings) as client, ThreadPoolExecutor(1) as pool:
        batch_id = f"unheard-{secrets.token_hex(4)}"
        # Raw writes on purpose: a batch's counts moved as only the reaper moves them.
        key = batches.record_key(client.keys, batch_id)
        redis_client.hset(key, mapping={"total": 1, "running": 1})
        batch = client.batch(batch_id)
        reads: list[BatchStatus] = []
        waited = pool.submit(batch.wait, 30, reads.append, 0.3)
        wait_for(lambda: len(reads) == 1, 10, "the wait's first read")
        redis_client.hset(key, mapping={"running": 0, "failed": 1})  # as REAP writes it
        ended = time.monotonic()
        status = waited.result(timeout=10)
        assert status.failed == 1 and time.monotonic() - ended < 10  # not the 30 s timeout
        redis_client.delete(key)
