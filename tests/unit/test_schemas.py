"""genq.common.schemas: the versioned models that cross Redis and Celery."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from genq.common.schemas import (
    SEED_MAX,
    BatchStatus,
    ChatMessage,
    FinishReason,
    GenerateRequest,
    JobRecord,
    JobResult,
    JobSpec,
    JobState,
    Usage,
    unencodable,
)
from genq.common.store import batches, jobs

MakeResult = Callable[..., JobResult]
HELLO = [{"role": "user", "content": "hello"}]


def test_job_spec_defaults() -> None:
    spec = JobSpec(prompt="Once")
    assert spec.model_dump() == {
        "v": 1,
        "model": "tiny",
        "prompt": "Once",
        "messages": None,
        "max_tokens": 256,
        "temperature": 0.8,
        "top_p": 0.95,
        "top_k": 40,
        "min_p": 0.05,
        "repeat_penalty": 1.0,
        "seed": None,
        "stop": [],
        "logit_bias": {},
        "ignore_eos": False,
        "deterministic": None,
        "window_tokens": None,
        "max_windows": None,
        "logprobs": None,
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", 0, "greater than or equal to 1"),
        ("max_tokens", 1_000_001, "less than or equal to 1000000"),
        ("temperature", -0.01, "greater than or equal to 0"),
        ("temperature", 2.01, "less than or equal to 2"),
        ("top_p", 0.0, "greater than 0"),
        ("top_p", 1.01, "less than or equal to 1"),
        ("top_k", -1, "greater than or equal to 0"),
        ("top_k", 100_001, "less than or equal to 100000"),
        ("min_p", -0.01, "greater than or equal to 0"),
        ("min_p", 1.01, "less than or equal to 1"),
        ("repeat_penalty", -0.01, "greater than or equal to 0"),
        ("repeat_penalty", 10.01, "less than or equal to 10"),
        ("seed", -1, "greater than or equal to 0"),
        ("seed", SEED_MAX + 1, "less than or equal to 4294967295"),
        ("stop", [""], "at least 1 character"),
        ("stop", ["x" * 257], "at most 256 characters"),
        ("stop", ["s"] * 17, "at most 16 items"),
        ("logit_bias", {5: 100.5}, "less than or equal to 100"),
        ("logit_bias", {5: -100.5}, "greater than or equal to -100"),
        ("model", "", "at least 1 character"),
        ("model", "my model", "should match pattern"),
        ("model", "m" * 129, "at most 128 characters"),
        ("messages", [], "at least 1 item"),
        ("messages", [{"role": "robot", "content": "hi"}], "'system', 'user', 'assistant'"),
        ("v", 2, "Input should be 1"),
    ],
)
def test_job_spec_rejects_out_of_range_field_naming_it(
    field: str, value: Any, message: str
) -> None:
    fields: dict[str, Any] = {"prompt": "x"} if field != "messages" else {}
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({**fields, field: value})
    errors = caught.value.errors()
    assert len(errors) == 1
    assert errors[0]["loc"][0] == field
    assert message in errors[0]["msg"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 1),
        ("max_tokens", 1_000_000),
        ("temperature", 0.0),
        ("temperature", 2.0),
        ("top_p", 1.0),
        ("top_k", 0),
        ("min_p", 0.0),
        ("repeat_penalty", 10.0),
        ("seed", 0),
        ("seed", SEED_MAX),
        ("stop", ["x" * 256] * 16),
        ("logit_bias", {0: -100.0, 1: 100.0}),
        ("model", "org/model-7b:Q4_K.M"),
    ],
)
def test_job_spec_accepts_values_on_the_bounds(field: str, value: Any) -> None:
    spec = JobSpec.model_validate({"prompt": "x", field: value})
    assert getattr(spec, field) == value


@pytest.mark.parametrize(
    "fields", [{}, {"prompt": "x", "messages": HELLO}], ids=["neither", "both"]
)
def test_job_spec_needs_exactly_one_of_prompt_and_messages(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of `prompt` and `messages`"):
        JobSpec.model_validate(fields)


# Strict types: what a user sends is what runs.


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_tokens", "10", "Input should be an integer, got a string"),
        ("max_tokens", True, "Input should be an integer, got a boolean"),
        ("max_tokens", 10.0, "Input should be an integer, got the number 10.0"),
        ("top_k", False, "Input should be an integer, got a boolean"),
        ("seed", "3", "Input should be an integer, got a string"),
        ("window_tokens", "8", "Input should be an integer, got a string"),
        ("max_windows", True, "Input should be an integer, got a boolean"),
        ("logprobs", True, "Input should be an integer, got a boolean"),
        ("temperature", "0.5", "Input should be a number, got a string"),
        ("temperature", True, "Input should be a number, got a boolean"),
        ("temperature", float("nan"), "Input should be a finite number, got nan"),
        ("top_p", float("inf"), "Input should be a finite number, got inf"),
        ("min_p", float("-inf"), "Input should be a finite number, got -inf"),
        ("repeat_penalty", None, "Input should be a number, got null"),
        ("ignore_eos", 1, "Input should be a valid boolean"),
        ("ignore_eos", "true", "Input should be a valid boolean"),
        ("prompt", 5, "Input should be a valid string"),
        ("stop", [1], "Input should be a valid string"),
    ],
)
def test_job_spec_refuses_a_value_of_the_wrong_type_naming_the_type(
    field: str, value: Any, message: str
) -> None:
    fields: dict[str, Any] = {"prompt": "x"} if field != "prompt" else {}
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({**fields, field: value})
    [error] = caught.value.errors()
    assert error["loc"][0] == field
    assert error["msg"] == message


def test_job_spec_takes_an_integer_where_a_number_is_asked() -> None:
    assert JobSpec(prompt="x", temperature=1, top_p=1).temperature == 1.0


@pytest.mark.parametrize(
    ("bias", "message"),
    [
        ({True: 1.0}, "Input should be an integer, got a boolean"),
        ({" 5": 1.0}, "Input should be an integer, got a string"),
        ({"-5": 1.0}, "Input should be an integer, got a string"),
        ({-5: 1.0}, "Input should be greater than or equal to 0"),
        ({5: float("nan")}, "Input should be a finite number, got nan"),
        ({5: "1"}, "Input should be a number, got a string"),
    ],
    ids=["bool-key", "padded-key", "negative-string-key", "negative-key", "nan", "string"],
)
def test_job_spec_refuses_a_logit_bias_that_is_not_token_ids_to_finite_numbers(
    bias: dict[Any, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({"prompt": "x", "logit_bias": bias})
    [error] = caught.value.errors()
    assert error["loc"][0] == "logit_bias"
    assert error["msg"] == message


def test_job_spec_reads_logit_bias_token_ids_written_as_json_keys() -> None:
    spec = JobSpec.model_validate({"prompt": "x", "logit_bias": {"50256": -100, 7: 2.5}})
    assert spec.logit_bias == {50256: -100.0, 7: 2.5}
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


# Strings must encode as UTF-8: Redis, JSON and the model take nothing else.


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"prompt": "ab\ud800"}, ("prompt",)),
        ({"prompt": "x", "stop": ["\udfff"]}, ("stop", 0)),
        (
            {
                "messages": [
                    {"role": "user", "content": "ok"},
                    {"role": "user", "content": "a\udc80"},
                ]
            },
            ("messages", 1, "content"),
        ),
    ],
    ids=["prompt", "stop", "message-content"],
)
def test_job_spec_refuses_a_string_with_a_lone_surrogate_saying_where(
    fields: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(fields)
    [error] = caught.value.errors()
    assert error["loc"] == loc
    assert error["msg"].startswith("cannot be encoded as UTF-8: a lone surrogate (\\u")


def test_unencodable_names_the_first_lone_surrogate_and_its_position() -> None:
    assert unencodable("ok 😀 é") is None
    assert unencodable("ab\ud800\udc00x\udfff") == (
        "cannot be encoded as UTF-8: a lone surrogate (\\ud800) at character 2"
    )


def test_a_surrogate_pair_is_one_character_and_is_accepted() -> None:
    assert JobSpec.model_validate_json('{"prompt": "\\ud83d\\ude00"}').prompt == "😀"


def test_job_spec_accepts_messages_alone() -> None:
    spec = JobSpec.model_validate({"messages": HELLO})
    assert spec.messages == [ChatMessage(role="user", content="hello")]
    assert spec.prompt is None


def test_job_spec_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="max_token\n  Extra inputs are not permitted"):
        JobSpec.model_validate({"prompt": "x", "max_token": 5})


def test_job_spec_is_immutable() -> None:
    spec = JobSpec(prompt="x")
    with pytest.raises(ValidationError, match="frozen"):
        spec.max_tokens = 5  # type: ignore[misc]


def test_prompt_chars_counts_the_prompt_or_every_message() -> None:
    assert JobSpec(prompt="héllo").prompt_chars == 5
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert JobSpec.model_validate({"messages": chat}).prompt_chars == 10


@pytest.mark.parametrize("with_result", [False, True], ids=["queued", "finished"])
def test_job_record_round_trips_through_a_redis_hash(
    make_result: MakeResult, with_result: bool
) -> None:
    spec = JobSpec.model_validate(
        {"messages": HELLO, "stop": ["\n\n"], "logit_bias": {2: -100.0}, "seed": 42}
    )
    record = JobRecord(
        spec=spec,
        state=JobState.SUCCEEDED if with_result else JobState.QUEUED,
        epoch=2,
        attempts=3,
        queue="gpu.tiny",
        worker="w1@host",
        submitted_ms=1_700_000_000_000,
        started_ms=1_700_000_000_500 if with_result else 0,
        finished_ms=1_700_000_001_000 if with_result else 0,
        result=make_result(text="línea\n😀", finish_reason=FinishReason.STOP)
        if with_result
        else None,
        error="",
    )
    raw = jobs.encode(record)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in raw.items())
    assert jobs.decode(raw) == record


def test_job_record_hash_stores_state_as_its_value() -> None:
    record = JobRecord(
        spec=JobSpec(prompt="x"), state=JobState.RUNNING, queue="cpu.tiny", submitted_ms=1
    )
    raw = jobs.encode(record)
    assert raw["state"] == "running"
    assert raw["result"] == ""


def test_generate_request_task_id_is_job_and_epoch() -> None:
    job_id = "ab" * 16
    assert GenerateRequest(job_id=job_id).task_id == f"{job_id}-0"
    assert GenerateRequest(job_id=job_id, epoch=3).task_id == f"{job_id}-3"


def test_generate_request_rejects_a_negative_epoch() -> None:
    with pytest.raises(ValidationError, match="epoch"):
        GenerateRequest(job_id="ab" * 16, epoch=-1)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"job_id": "x"}, "job_id"),
        ({"job_id": "AB" * 16}, "job_id"),
        ({"job_id": "ab" * 16 + "\n"}, "job_id"),
        ({"job_id": "ab" * 16, "epoch": True}, "epoch"),
        ({"job_id": "ab" * 16, "batch_id": "a}b"}, "batch_id"),
        ({"job_id": "ab" * 16, "batch_id": "b" * 65}, "batch_id"),
    ],
    ids=["short-id", "upper-case-id", "id-and-newline", "bool-epoch", "brace", "long-batch"],
)
def test_generate_request_refuses_ids_that_are_not_genq_ids(
    fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        GenerateRequest.model_validate(fields)
    assert [error["loc"][0] for error in caught.value.errors()] == [field]


def test_generate_request_takes_a_batch_id_or_none() -> None:
    assert GenerateRequest(job_id="ab" * 16, batch_id="nightly-4.2_x").batch_id == "nightly-4.2_x"
    assert GenerateRequest(job_id="ab" * 16).batch_id == ""


@pytest.mark.parametrize(
    ("state", "terminal"),
    [
        (JobState.QUEUED, False),
        (JobState.RUNNING, False),
        (JobState.SUCCEEDED, True),
        (JobState.FAILED, True),
        (JobState.CANCELLED, True),
        (JobState.EXPIRED, True),
    ],
)
def test_job_state_terminal(state: JobState, terminal: bool) -> None:
    assert state.terminal is terminal


def test_usage_total_is_prompt_plus_completion() -> None:
    assert Usage(prompt_tokens=5, completion_tokens=7).total_tokens == 12


def test_job_record_round_trips_its_queue_and_batch_fields_through_a_redis_hash() -> None:
    record = JobRecord(
        spec=JobSpec(prompt="x"),
        state=JobState.EXPIRED,
        queue="cpu.tiny",
        priority=9,
        batch_id="batch_1",
        custom_id="line-7",
        dispatched=False,
        submitted_ms=1_000,
        expires_ms=61_000,
        error="the job was not started before its expiry time",
        error_code="expired",
    )
    raw = jobs.encode(record)
    assert all(isinstance(key, str) and isinstance(value, str) for key, value in raw.items())
    assert (raw["priority"], raw["batch_id"], raw["expires_ms"]) == ("9", "batch_1", "61000")
    back = jobs.decode(raw)
    assert back == record
    assert back.dispatched is False


def test_job_record_defaults_to_dispatched_at_the_default_priority_without_expiry() -> None:
    record = JobRecord(
        spec=JobSpec(prompt="x"), state=JobState.QUEUED, queue="cpu.tiny", submitted_ms=1
    )
    assert (record.priority, record.dispatched, record.expires_ms) == (5, True, 0)
    assert (record.batch_id, record.custom_id, record.error_code) == ("", "", "")


@pytest.mark.parametrize("priority", [-1, 10])
def test_job_record_rejects_a_priority_outside_0_to_9(priority: int) -> None:
    with pytest.raises(ValidationError, match="priority"):
        JobRecord(
            spec=JobSpec(prompt="x"),
            state=JobState.QUEUED,
            queue="cpu.tiny",
            submitted_ms=1,
            priority=priority,
        )


def test_batch_status_from_hash_parses_strings_and_ignores_unknown_fields() -> None:
    raw = {
        "total": "4",
        "queued": "1",
        "running": "1",
        "succeeded": "1",
        "failed": "1",
        "tokens": "120",
        "priority": "7",
        "created_ms": "1000",
        "finished_ms": "2000",
        "expires_ms": "0",
        "cancel_requested": "True",
        "input_file": "batch.jsonl",
        "batch_id": "someone-else",
    }
    status = batches.decode_status("b1", raw)
    assert status == BatchStatus(
        batch_id="b1",
        total=4,
        queued=1,
        running=1,
        succeeded=1,
        failed=1,
        tokens=120,
        priority=7,
        created_ms=1000,
        finished_ms=2000,
        cancel_requested=True,
    )


def test_batch_status_from_an_empty_hash_has_zero_counts() -> None:
    status = batches.decode_status("b1", {})
    assert (status.total, status.ended, status.complete, status.cancel_requested) == (
        0,
        0,
        False,
        False,
    )


def test_batch_status_ended_counts_every_terminal_state() -> None:
    status = BatchStatus(
        batch_id="b", total=20, queued=5, running=1, succeeded=2, failed=3, cancelled=4, expired=5
    )
    assert status.ended == 14
    assert not status.complete


@pytest.mark.parametrize(
    ("counts", "cancel_requested", "state", "complete"),
    [
        ({"total": 3, "queued": 1, "running": 1, "succeeded": 1}, False, "in_progress", False),
        ({"total": 3, "queued": 2, "cancelled": 1}, True, "cancelling", False),
        ({"total": 3, "succeeded": 2, "failed": 1}, False, "completed", True),
        ({"total": 3, "succeeded": 1, "cancelled": 1, "expired": 1}, True, "cancelled", True),
        ({"total": 0}, False, "in_progress", False),
    ],
    ids=["in-progress", "cancelling", "completed", "cancelled", "empty"],
)
def test_batch_status_state_follows_its_counts_and_cancel_request(
    counts: dict[str, int], cancel_requested: bool, state: str, complete: bool
) -> None:
    status = BatchStatus(batch_id="b", cancel_requested=cancel_requested, **counts)
    assert (status.state, status.complete) == (state, complete)
