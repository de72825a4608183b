"""genq.common.lifecycle: the FINISH command's arguments, and the end of a job that never started
(cancelled while queued, or expired)."""

from __future__ import annotations

from typing import Any

import pytest

from genq.common import lifecycle
from genq.common.frames import DoneFrame, ErrorFrame, parse_frame
from genq.common.lifecycle import Finish, unstarted_finish
from genq.common.schemas import FinishReason, JobRecord, JobResult, JobSpec, JobState
from genq.common.store import batches, indexes, jobs, streams
from genq.common.store.keys import Keys
from genq.common.store.streams import CheckpointEntry

JOB = "0123456789abcdef0123456789abcdef"
NOW_MS = 1_700_000_005_000
SUBMITTED_MS = 1_700_000_000_000
COMMITTED = [
    CheckpointEntry(token_ids=[1, 2], text="ab"),
    CheckpointEntry(token_ids=[3, 4, 5], text="c€"),
]


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "now_ms", lambda: NOW_MS)


def record(batch_id: str = "", epoch: int = 2) -> JobRecord:
    return JobRecord(
        spec=JobSpec(prompt="p", model="tiny"),
        state=JobState.QUEUED,
        epoch=epoch,
        queue="cpu.tiny",
        submitted_ms=SUBMITTED_MS,
        batch_id=batch_id,
    )


def done_frame(finish: Finish) -> DoneFrame:
    frame = parse_frame(finish.frame)
    assert isinstance(frame, DoneFrame)
    return frame


def error_frame(finish: Finish) -> ErrorFrame:
    frame = parse_frame(finish.frame)
    assert isinstance(frame, ErrorFrame)
    return frame


# A cancelled job that never started, or whose earlier attempt committed windows.


def test_a_cancelled_unstarted_job_finishes_from_queued_at_its_epoch() -> None:
    finish = unstarted_finish(JOB, record(batch_id="b1"), JobState.CANCELLED, COMMITTED)
    assert (finish.job_id, finish.epoch, finish.batch_id) == (JOB, 2, "b1")
    assert finish.from_state == JobState.QUEUED
    assert finish.fields["state"] == JobState.CANCELLED
    assert finish.fields["finished_ms"] == NOW_MS


def test_a_cancelled_unstarted_job_ends_with_a_done_frame_of_its_committed_text() -> None:
    finish = unstarted_finish(JOB, record(), JobState.CANCELLED, COMMITTED)
    frame = done_frame(finish)
    assert (frame.job_id, frame.epoch, frame.seq) == (JOB, 2, 1)
    result = frame.data
    assert result.finish_reason == FinishReason.CANCELLED
    assert result.text == "abc€"
    assert result.model == "tiny"
    assert result.usage.completion_tokens == 5
    assert result.timings.queue_wait_ms == NOW_MS - SUBMITTED_MS
    assert finish.tokens == 5


def test_a_cancelled_unstarted_job_stores_the_result_its_frame_carries() -> None:
    finish = unstarted_finish(JOB, record(), JobState.CANCELLED, COMMITTED)
    stored = JobResult.model_validate_json(finish.fields["result"])
    assert stored == done_frame(finish).data


def test_a_cancelled_job_with_nothing_committed_has_empty_text_and_no_tokens() -> None:
    finish = unstarted_finish(JOB, record(epoch=0), JobState.CANCELLED, [])
    result = done_frame(finish).data
    assert (result.text, result.usage.completion_tokens, finish.tokens) == ("", 0, 0)
    assert result.finish_reason == FinishReason.CANCELLED


# An expired job.


def test_an_expired_job_ends_with_an_expired_error_frame() -> None:
    finish = unstarted_finish(JOB, record(batch_id="b1"), JobState.EXPIRED, [])
    frame = error_frame(finish)
    assert (frame.job_id, frame.epoch, frame.seq) == (JOB, 2, 1)
    assert frame.data.code == "expired"
    assert frame.data.retryable is False
    assert finish.from_state == JobState.QUEUED
    assert finish.fields["state"] == JobState.EXPIRED
    assert finish.fields["error_code"] == "expired"
    assert finish.fields["error"] == frame.data.message
    assert "result" not in finish.fields
    assert finish.tokens == 0


# The FINISH script's KEYS and ARGV (common/store/leases.py builds them).


def call_parts(finish: Finish, keys: Keys, ttl_s: int) -> tuple[list[Any], list[Any]]:
    (call,) = finish.command(keys, ttl_s).calls
    assert call[0] == "EVAL"
    count = call[2]
    return list(call[3 : 3 + count]), list(call[3 + count :])


def test_finish_call_without_a_batch_names_the_job_leases_and_expiries() -> None:
    keys = Keys()
    finish = unstarted_finish(JOB, record(), JobState.CANCELLED, COMMITTED)
    names, _ = call_parts(finish, keys, 3600)
    assert names == [
        jobs.record_key(keys, JOB),
        indexes.leases_key(keys),
        indexes.expiries_key(keys),
    ]


def test_finish_call_with_a_batch_adds_its_hash_jobs_list_index_and_ended_channel() -> None:
    keys = Keys("staging")
    finish = unstarted_finish(JOB, record(batch_id="b1"), JobState.CANCELLED, COMMITTED)
    names, _ = call_parts(finish, keys, 3600)
    assert names == [
        jobs.record_key(keys, JOB),
        indexes.leases_key(keys),
        indexes.expiries_key(keys),
        batches.record_key(keys, "b1"),
        batches.jobs_key(keys, "b1"),
        batches.index_key(keys, "b1"),
        batches.ended_channel(keys, "b1"),
    ]


def test_finish_call_argv_is_the_fence_the_frame_the_tokens_then_field_pairs() -> None:
    keys = Keys()
    fields = {"state": JobState.CANCELLED, "finished_ms": 17, "error": ""}
    finish = Finish(JOB, 4, "", JobState.QUEUED, fields, '{"frame": 1}', tokens=9)
    _, args = call_parts(finish, keys, 600)
    assert args == [
        JOB,
        4,
        "queued",
        600,
        streams.channel(keys, JOB),
        '{"frame": 1}',
        9,
        NOW_MS,
        "genq",  # the key prefix (fair share)
        0,  # prompt tokens
        "state",
        "cancelled",
        "finished_ms",
        "17",
        "error",
        "",
    ]
    assert all(isinstance(arg, str) for arg in args[10:])


def test_unstarted_finish_argv_carries_the_frame_and_the_committed_token_count() -> None:
    finish = unstarted_finish(JOB, record(batch_id="b1"), JobState.CANCELLED, COMMITTED)
    _, args = call_parts(finish, Keys(), 60)
    assert args[:8] == [JOB, 2, "queued", 60, streams.channel(Keys(), JOB), finish.frame, 5, NOW_MS]
    pairs = dict(zip(args[10::2], args[11::2], strict=True))
    assert pairs["state"] == "cancelled"
    assert pairs["finished_ms"] == str(NOW_MS)
