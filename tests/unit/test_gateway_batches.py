"""The gateway's batches without services: completion windows, OpenAI's status of a batch from
genq's counts, output and error lines, the endpoint check, and the file and batch stores'
key names and listing pages."""

from __future__ import annotations

import json

import pytest

from genq.common.schemas import (
    BatchStatus,
    FinishReason,
    JobRecord,
    JobResult,
    JobSpec,
    JobState,
    Timings,
    Usage,
)
from genq.common.store import files, openai_batches
from genq.common.store.files import StoredFile
from genq.common.store.keys import Keys
from genq.common.store.openai_batches import ApiBatch
from genq.producer.gateway.batches import endpoint_errors, output_line, status_of, window_s
from genq.producer.gateway.errors import ApiError

KEYS = Keys()
JOB = "ab" * 16
CHAT = "/v1/chat/completions"


def _batch(**update: object) -> ApiBatch:
    batch = ApiBatch(
        batch_id="batch_" + "0" * 24,
        endpoint=CHAT,
        input_file_id="file-" + "1" * 32,
        completion_window="24h",
        window_s=86_400,
        created_ms=1_000,
        state="submitted",
        output_file_id="file-" + "2" * 32,
        error_file_id="file-" + "3" * 32,
    )
    return batch.model_copy(update=update)


def _status(**counts: int | bool) -> BatchStatus:
    return BatchStatus.model_validate({"batch_id": "b", "total": 3, **counts})


def _record(state: JobState, **update: object) -> JobRecord:
    record = JobRecord(
        spec=JobSpec(prompt="x"),
        state=state,
        queue="cpu.tiny",
        submitted_ms=1,
        custom_id="q1",
        finished_ms=5_000,
    )
    return record.model_copy(update=update)


@pytest.mark.parametrize(
    ("window", "seconds"), [("24h", 86_400), ("1s", 1), ("90m", 5_400), ("7d", 604_800)]
)
def test_a_completion_window_is_a_count_of_seconds_minutes_hours_or_days(
    window: str, seconds: int
) -> None:
    assert window_s(window) == seconds


@pytest.mark.parametrize("window", ["", "24", "0s", "8d", "1.5h", "24H", "-1h", "forever"])
def test_a_window_outside_one_second_to_seven_days_is_refused_naming_the_field(
    window: str,
) -> None:
    with pytest.raises(ApiError) as caught:
        window_s(window)
    assert (caught.value.status, caught.value.param) == (400, "completion_window")


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"queued": 2, "succeeded": 1}, "in_progress"),
        ({"running": 1, "succeeded": 2, "cancel_requested": True}, "cancelling"),
        ({"succeeded": 3}, "completed"),
        ({"succeeded": 2, "failed": 1}, "completed"),
        ({"succeeded": 1, "expired": 2}, "expired"),
        ({"succeeded": 1, "cancelled": 2, "cancel_requested": True}, "cancelled"),
    ],
)
def test_openai_status_follows_genq_counts(counts: dict[str, int], expected: str) -> None:
    assert status_of(_batch(), _status(**counts)) == expected


def test_a_batch_not_yet_submitted_or_refused_has_the_gateway_state() -> None:
    assert status_of(_batch(state="validating"), None) == "validating"
    assert status_of(_batch(state="failed"), None) == "failed"


def test_a_succeeded_job_is_an_output_line_with_a_chat_completion_body() -> None:
    result = JobResult(
        job_id=JOB,
        model="tiny",
        text="hello",
        finish_reason=FinishReason.LENGTH,
        usage=Usage(prompt_tokens=3, completion_tokens=2),
        timings=Timings(queue_wait_ms=0, first_token_ms=0, generation_ms=0, tokens_per_s=0),
    )
    ok, text = output_line(JOB, _record(JobState.SUCCEEDED, result=result), CHAT)
    line = json.loads(text)

    assert ok and line["error"] is None and line["custom_id"] == "q1"
    assert line["response"]["status_code"] == 200 and line["response"]["request_id"] == JOB
    body = line["response"]["body"]
    assert (body["id"], body["object"]) == (f"chatcmpl-{JOB}", "chat.completion")
    assert body["created"] == 5
    assert body["choices"][0]["message"]["content"] == "hello"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


@pytest.mark.parametrize(
    ("record", "code"),
    [
        (_record(JobState.CANCELLED), "batch_cancelled"),
        (_record(JobState.EXPIRED), "batch_expired"),
        (_record(JobState.FAILED, error="boom", error_code="load_failed"), "load_failed"),
        (None, "not_retained"),
    ],
)
def test_a_job_that_did_not_succeed_is_an_error_line(record: JobRecord | None, code: str) -> None:
    ok, text = output_line(JOB, record, CHAT)
    line = json.loads(text)
    assert not ok and line["response"] is None and line["error"]["code"] == code


def test_lines_for_another_endpoint_are_named_and_other_faults_left_to_genq() -> None:
    lines = [
        json.dumps({"custom_id": "a", "url": CHAT}),
        json.dumps({"custom_id": "b", "url": "/v1/completions"}),
        "not json",
        "",
        json.dumps({"custom_id": "c", "prompt": "genq form"}),
    ]
    assert [(e.line, e.code) for e in endpoint_errors(lines, CHAT)] == [
        (2, "invalid_url"),
        (5, "invalid_url"),
    ]


def test_a_file_is_kept_under_its_own_hash_tag_and_listed() -> None:
    file = StoredFile("file-" + "a" * 32, 3, 7_000, "x.jsonl", "batch")
    calls = files.put(KEYS, file, "abc", ttl_s=60).calls
    assert calls[0] == ("SET", f"genq:file:{{{file.file_id}}}:content", "abc", "EX", 60)
    assert calls[1][:2] == ("HSET", f"genq:file:{{{file.file_id}}}")
    assert calls[3] == ("ZADD", "genq:files", 7_000, file.file_id)
    raw = dict(zip(calls[1][2::2], calls[1][3::2], strict=True))
    assert files.read(KEYS, file.file_id).reply([raw]) == file


@pytest.mark.parametrize("text", ["file-" + "a" * 32, "file-x", "../file", "file-" + "A" * 32])
def test_only_generated_file_ids_name_a_file(text: str) -> None:
    assert files.is_file_id(text) is (text == "file-" + "a" * 32)


def test_a_batch_listing_page_starts_after_the_given_batch() -> None:
    every = ["b5", "b4", "b3", "b2", "b1"]
    page = openai_batches.ids_page(KEYS, 0, "b4", 2)
    assert page.reply([0, 1, every]) == ["b3", "b2"]
    assert openai_batches.ids_page(KEYS, 0, None, 2).reply([0, None, every]) == ["b5", "b4"]
    assert openai_batches.ids_page(KEYS, 0, "gone", 2).reply([0, None, every]) == ["b5", "b4"]
