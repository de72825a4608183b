"""genq.common.store.streams against a real Redis: the CHECKPOINT script's fencing, the stream's
writes and reads on both executors, and the retention after a terminal frame."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio

from genq.common.ids import new_job_id
from genq.common.schemas import JobRecord, JobSpec, JobState
from genq.common.settings import Settings
from genq.common.store import arun, jobs, run, run_all, streams
from genq.common.store.keys import Keys
from genq.common.store.streams import CheckpointEntry

KEYS = Keys()


def _job(r: redis.Redis, epoch: int) -> str:
    job_id = new_job_id()
    record = JobRecord(
        spec=JobSpec(prompt="x"), state=JobState.RUNNING, queue="cpu.tiny", submitted_ms=1
    )
    run(r, jobs.write(KEYS, job_id, record.model_copy(update={"epoch": epoch}), ttl_s=60))
    return job_id


def _window(i: int) -> CheckpointEntry:
    return CheckpointEntry(token_ids=[i], text=f"w{i}")


def test_checkpoint_appends_windows_in_order_from_the_current_epoch_only(
    redis_client: redis.Redis,
) -> None:
    job_id = _job(redis_client, epoch=2)
    checkpoint = [
        streams.checkpoint(KEYS, job_id, epoch=2, window=0, entry=_window(0)),
        streams.checkpoint(KEYS, job_id, epoch=2, window=0, entry=_window(9)),  # duplicate
        streams.checkpoint(KEYS, job_id, epoch=2, window=2, entry=_window(2)),  # out of order
        streams.checkpoint(KEYS, job_id, epoch=1, window=1, entry=_window(1)),  # fenced out
        streams.checkpoint(KEYS, job_id, epoch=2, window=1, entry=_window(1)),
    ]
    assert run_all(redis_client, checkpoint) == [1, -2, -2, -1, 2]
    assert run(redis_client, streams.entries(KEYS, job_id)) == [_window(0), _window(1)]


def test_checkpoint_of_a_job_without_a_record_is_refused(redis_client: redis.Redis) -> None:
    job_id = new_job_id()
    command = streams.checkpoint(KEYS, job_id, epoch=0, window=0, entry=_window(0))
    assert run(redis_client, command) == -3
    assert run(redis_client, streams.entries(KEYS, job_id)) == []


def test_frames_read_back_in_order_and_a_fenced_id_is_refused(redis_client: redis.Redis) -> None:
    job_id = new_job_id()
    key = streams.stream_key(KEYS, job_id)
    run_all(redis_client, [streams.append(KEYS, job_id, f"1-{s}", f'{{"s":{s}}}') for s in (1, 2)])
    with pytest.raises(redis.ResponseError, match="equal or smaller"):
        run(redis_client, streams.append(KEYS, job_id, "0-9", "{}"))
    ranged = run(redis_client, streams.frames(KEYS, job_id))
    read = run(redis_client, streams.read({key: "1-1"}, count=10, block_ms=None))
    assert [entry_id for entry_id, _ in ranged] == ["1-1", "1-2"]
    assert read == [[key, [("1-2", {"f": '{"s":2}'})]]]
    assert read == redis_client.xread({key: "1-1"}, count=10)  # the reply readers parse


def test_the_last_entry_id_is_none_until_the_stream_holds_one(redis_client: redis.Redis) -> None:
    job_id = new_job_id()
    assert run(redis_client, streams.last_id(KEYS, job_id)) is None
    run_all(redis_client, [streams.append(KEYS, job_id, entry, "{}") for entry in ("0-1", "1-3")])
    assert run(redis_client, streams.last_id(KEYS, job_id)) == "1-3"


def test_a_blocking_read_of_a_quiet_stream_returns_nothing_on_both_faces(
    redis_client: redis.Redis, settings: Settings
) -> None:
    job_id = new_job_id()
    key = streams.stream_key(KEYS, job_id)
    run(redis_client, streams.append(KEYS, job_id, "0-1", "{}"))
    read = streams.read({key: "0-1"}, count=10, block_ms=50)
    assert run(redis_client, read) == []

    async def main() -> object:
        r = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
        try:
            quiet = await arun(r, read)
            everything = await arun(r, streams.read({key: "0-0"}, count=10, block_ms=50))
            return quiet, everything
        finally:
            await r.aclose()

    assert asyncio.run(main()) == ([], [[key, [("0-1", {"f": "{}"})]]])


def test_retain_gives_the_stream_and_the_checkpoint_the_retention_time(
    redis_client: redis.Redis,
) -> None:
    job_id = _job(redis_client, epoch=0)
    run_all(
        redis_client,
        [
            streams.append(KEYS, job_id, "0-1", "{}"),
            streams.checkpoint(KEYS, job_id, epoch=0, window=0, entry=_window(0)),
            streams.retain(KEYS, job_id, ttl_s=30),
        ],
    )
    for key in (streams.stream_key(KEYS, job_id), streams.checkpoint_key(KEYS, job_id)):
        assert 0 < redis_client.ttl(key) <= 30
