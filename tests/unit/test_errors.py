"""common.errors: one hierarchy; bad input apart from failures; retryable apart from permanent."""

from __future__ import annotations

import pytest

from genq.common.errors import (
    ErrorCode,
    GenerationError,
    GenqError,
    InvalidJob,
    JobFailed,
    ModelLoadError,
    PromptTooLong,
    QuotaExceeded,
    RedisUnavailable,
    RegistryError,
    StreamTimeout,
    UnknownModel,
    WorkerConfigError,
    WorkerError,
)


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        (InvalidJob, (GenqError, ValueError)),
        (UnknownModel, (InvalidJob, ValueError)),
        (PromptTooLong, (InvalidJob, ValueError)),
        (RegistryError, (GenqError,)),
        (WorkerConfigError, (RegistryError, GenqError)),
        (RedisUnavailable, (GenqError, ConnectionError)),
        (StreamTimeout, (GenqError, TimeoutError)),
        (JobFailed, (GenqError,)),
        (QuotaExceeded, (GenqError,)),
        (ModelLoadError, (WorkerError, GenqError)),
        (GenerationError, (WorkerError, GenqError)),
    ],
)
def test_error_hierarchy(error: type[GenqError], bases: tuple[type[Exception], ...]) -> None:
    assert all(issubclass(error, base) for base in bases)


@pytest.mark.parametrize("error", [RedisUnavailable, StreamTimeout])
def test_transient_errors_are_retryable(error: type[GenqError]) -> None:
    assert error("down").retryable


@pytest.mark.parametrize(
    "error", [InvalidJob, UnknownModel, PromptTooLong, RegistryError, ModelLoadError]
)
def test_permanent_errors_are_not_retryable(error: type[GenqError]) -> None:
    assert not error("bad").retryable


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidJob, ErrorCode.INVALID_JOB),
        (UnknownModel, ErrorCode.UNKNOWN_MODEL),
        (PromptTooLong, ErrorCode.PROMPT_TOO_LONG),
        (ModelLoadError, ErrorCode.MODEL_LOAD_FAILED),
        (GenerationError, ErrorCode.GENERATION_FAILED),
        (GenqError, ErrorCode.INTERNAL),
    ],
)
def test_error_code_names_the_error_on_the_wire(error: type[GenqError], code: ErrorCode) -> None:
    assert error.code is code


def test_a_quota_refusal_is_retryable_and_says_when() -> None:
    refused = QuotaExceeded("tenant 'acme': over its tokens_per_minute (60)", 1.5)
    assert refused.retryable and refused.retry_after_s == 1.5
    assert refused.code is ErrorCode.QUOTA_EXCEEDED


def test_bad_input_is_caught_as_value_error() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        raise UnknownModel("unknown model 'x'")


@pytest.mark.parametrize("retryable", [True, False])
def test_job_failed_carries_the_workers_verdict(retryable: bool) -> None:
    failed = JobFailed("j1", "generation_failed", "backend crashed", retryable)
    assert str(failed) == "job j1 failed (generation_failed): backend crashed"
    assert (failed.job_id, failed.error_code, failed.error_message) == (
        "j1",
        "generation_failed",
        "backend crashed",
    )
    assert failed.retryable is retryable
    assert JobFailed.retryable is False  # the instance's verdict does not leak to the class
