"""The batch store's commands, without Redis: the calls each makes (SUBMIT's keys and argument
order) and how it decodes replies (the record's counts, its cancel flag, results lines)."""

from __future__ import annotations

import json

import pytest

from genq.common.errors import ErrorCode
from genq.common.schemas import BatchStatus, JobRecord, JobSpec, JobState
from genq.common.store import batches, jobs
from genq.common.store.batches import NewJob, Opening
from genq.common.store.keys import Keys

KEYS = Keys()
JOB = "ab" * 16
OTHER = "cd" * 16


def _record(**update: object) -> JobRecord:
    record = JobRecord(
        spec=JobSpec(prompt="x"), state=JobState.QUEUED, queue="cpu.tiny", submitted_ms=1
    )
    return record.model_copy(update=update)


def test_submit_names_the_batch_keys_then_each_job_and_passes_four_args_per_job() -> None:
    new = [NewJob("line-1", JOB, _record(expires_ms=9)), NewJob("line-2", OTHER, _record())]
    command = batches.submit(KEYS, "b1", new, ttl_s=60, opening=None)
    ((name, script, numkeys, *rest),) = command.calls
    assert (name, script, numkeys) == ("EVAL", batches.SUBMIT, 6)
    assert rest[:6] == [
        "genq:batch:{b1}",
        "genq:batch:{b1}:jobs",
        "genq:batch:{b1}:ids",
        "genq:expiries",
        jobs.record_key(KEYS, JOB),
        jobs.record_key(KEYS, OTHER),
    ]
    ttl, prefix, *per_job = rest[6:]
    assert (ttl, prefix) == (60, "genq")
    assert per_job[:3] == ["line-1", JOB, 9]
    assert json.loads(per_job[3]) == jobs.encode(_record(expires_ms=9))
    assert per_job[4:7] == ["line-2", OTHER, 0]


def test_the_first_chunk_opens_the_record_before_its_script_runs() -> None:
    new = [NewJob("line-1", JOB, _record())]
    command = batches.submit(KEYS, "b1", new, ttl_s=60, opening=Opening(5, 7, 0, "acme"))
    assert command.calls[:4] == (
        ("HSETNX", "genq:batch:{b1}", "created_ms", 5),
        ("HSETNX", "genq:batch:{b1}", "priority", 7),
        ("HSETNX", "genq:batch:{b1}", "expires_ms", 0),
        ("HSETNX", "genq:batch:{b1}", "tenant", "acme"),
    )
    assert command.calls[4][0] == "EVAL"
    assert command.reply([True, True, True, True, [JOB]]) == {JOB}


def test_submit_answers_none_when_the_batch_was_cancelled() -> None:
    command = batches.submit(KEYS, "b1", [NewJob("c", JOB, _record())], ttl_s=60, opening=None)
    assert command.reply([None]) is None
    assert command.reply([[]]) == set()


def test_a_batch_status_parses_strings_and_ignores_unknown_fields() -> None:
    raw = {"total": "4", "queued": "1", "succeeded": "3", "tokens": "12", "input_file": "x"}
    status = batches.status(KEYS, "b1")
    assert status.calls == (("HGETALL", "genq:batch:{b1}"),)
    expected = BatchStatus(batch_id="b1", total=4, queued=1, succeeded=3, tokens=12)
    assert status.reply([raw]) == expected
    assert status.reply([{}]) is None


@pytest.mark.parametrize("stored", ["1", "True"])
def test_the_cancel_flag_reads_in_both_spellings(stored: str) -> None:
    status = batches.decode_status("b1", {"total": "1", "cancel_requested": stored})
    assert status.cancel_requested is True
    assert batches.decode_status("b1", {"cancel_requested": stored}) == status.model_copy(
        update={"total": 0}
    )


def test_a_cancel_request_writes_the_flag_as_one() -> None:
    command = batches.request_cancel(KEYS, "b1")
    assert command.calls == (("HSET", "genq:batch:{b1}", "cancel_requested", "1"),)


def test_job_ids_are_read_a_page_at_a_time_in_input_order() -> None:
    command = batches.job_ids(KEYS, "b1", start=500, count=500)
    assert command.calls == (("LRANGE", "genq:batch:{b1}:jobs", 500, 999),)
    assert command.reply([[JOB, OTHER]]) == [JOB, OTHER]


def test_the_index_maps_custom_ids_to_job_ids_leaving_out_unknown_ones() -> None:
    command = batches.job_ids_of(KEYS, "b1", ["a", "b"])
    assert command.calls == (("HMGET", "genq:batch:{b1}:ids", "a", "b"),)
    assert command.reply([[JOB, None]]) == [JOB]


def test_results_read_each_jobs_result_fields_and_make_lines() -> None:
    command = batches.result_fields(KEYS, [JOB, OTHER])
    assert command.calls == (
        ("HMGET", jobs.record_key(KEYS, JOB), *batches.RESULT_FIELDS),
        ("HMGET", jobs.record_key(KEYS, OTHER), *batches.RESULT_FIELDS),
    )
    outcome = '{"text": "t", "finish_reason": "length", "usage": null}'
    ended, running = ["succeeded", "c", outcome, None, None], ["running", "c", None, None, None]
    rows = command.reply([ended, running])
    line = batches.result_line(JOB, rows[0])
    assert line is not None and (line.custom_id, line.text, line.status) == (
        "c",
        "t",
        JobState.SUCCEEDED,
    )
    assert batches.result_line(OTHER, rows[1]) is None


def test_a_job_no_longer_kept_is_a_failed_line() -> None:
    line = batches.result_line(JOB, [None] * len(batches.RESULT_FIELDS))
    assert line is not None and line.error is not None
    assert (line.status, line.error.code) == (JobState.FAILED, ErrorCode.NOT_RETAINED)


def test_the_ended_channel_is_the_batchs_own() -> None:
    assert batches.ended_channel(KEYS, "b1") == "genq:batch:{b1}:ended"
