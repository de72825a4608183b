"""producer.core: user input to a JobSpec, and a job's frames folded into what a reader sees."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from genq.common.dispatch import Dispatch, broker_priority
from genq.common.errors import InvalidJob, JobFailed, ResultNotReady
from genq.common.frames import (
    ContinuationData,
    ContinuationFrame,
    DoneFrame,
    ErrorData,
    ErrorFrame,
    ResumeData,
    ResumeFrame,
    TokenData,
    TokenFrame,
    WindowData,
    WindowFrame,
)
from genq.common.schemas import GenerateRequest, JobRecord, JobResult, JobSpec, JobState
from genq.producer import core
from genq.producer.core import Placement, PreparedJob, StreamState, parse_spec

JOB = "ab" * 16
MakeResult = Callable[..., JobResult]


def test_parse_spec_takes_a_prompt_and_fields() -> None:
    spec = parse_spec("Once upon a time", {"max_tokens": 8, "stop": ["\n"]})
    assert (spec.prompt, spec.max_tokens, spec.stop) == ("Once upon a time", 8, ["\n"])


def test_parse_spec_takes_messages_without_a_prompt() -> None:
    spec = parse_spec(None, {"messages": [{"role": "user", "content": "hi"}]})
    assert spec.prompt is None
    assert spec.messages is not None


def test_parse_spec_passes_a_spec_through() -> None:
    spec = JobSpec(prompt="x", max_tokens=3)
    assert parse_spec(spec, {}) is spec


def test_parse_spec_applies_fields_to_a_spec() -> None:
    spec = parse_spec(JobSpec(prompt="x", max_tokens=3), {"max_tokens": 9})
    assert (spec.prompt, spec.max_tokens) == ("x", 9)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"temperature": 9}, "temperature: Input should be less than or equal to 2"),
        ({"seed": -1}, "seed: "),
        ({"stop": ["a", ""]}, "stop.1: "),
        ({"max_tokns": 5}, "max_tokns: Extra inputs are not permitted"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "`prompt` and `messages`"),
    ],
    ids=["max_tokens", "temperature", "seed", "stop-item", "unknown-field", "both-inputs"],
)
def test_parse_spec_error_names_the_bad_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidJob) as caught:
        parse_spec("hi", fields)
    assert str(caught.value).startswith("invalid job: ")
    assert named in str(caught.value)


def test_parse_spec_without_prompt_or_messages_is_invalid() -> None:
    with pytest.raises(InvalidJob, match="exactly one of `prompt` and `messages`"):
        parse_spec(None, {"max_tokens": 5})


def test_parse_spec_reports_every_bad_field() -> None:
    with pytest.raises(InvalidJob) as caught:
        parse_spec("hi", {"max_tokens": 0, "top_p": 0})
    assert "max_tokens: " in str(caught.value)
    assert "top_p: " in str(caught.value)


@pytest.mark.parametrize("fields", [{"max_tokens": 0}, {"max_tokns": 5}], ids=["range", "unknown"])
def test_parse_spec_validates_fields_applied_to_a_spec(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidJob, match=next(iter(fields))):
        parse_spec(JobSpec(prompt="x"), fields)


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    """Replace the clock genq.producer.core reads (only there, not the time module itself)."""
    fake = FakeMonotonic()
    monkeypatch.setattr(core, "time", SimpleNamespace(monotonic=fake, time_ns=time.time_ns))
    return fake


def token(seq: int, text: str, token_ids: list[int]) -> TokenFrame:
    return TokenFrame(job_id=JOB, epoch=0, seq=seq, data=TokenData(text=text, token_ids=token_ids))


def test_stream_state_concatenates_token_text_and_counts(clock: FakeMonotonic) -> None:
    state = StreamState(JOB, started=clock.now)
    for frame in [token(0, "Once", [1]), token(1, " upon a", [2, 3]), token(2, "", [4])]:
        state.apply(frame)
    assert state.text == "Once upon a"
    assert (state.chunks, state.tokens) == (3, 4)
    assert not state.done


def test_stream_state_times_the_first_token_frame_not_earlier_frames(
    clock: FakeMonotonic,
) -> None:
    state = StreamState(JOB, started=clock.now)
    clock.now += 1.0
    state.apply(ContinuationFrame(job_id=JOB, epoch=0, seq=0, data=ContinuationData(window=0)))
    clock.now += 1.5
    state.apply(token(1, "a", [1]))
    clock.now += 2.0
    state.apply(token(2, "bcd", [2, 3, 4, 5]))
    stats = state.stats()
    assert stats.first_token_s == 2.5
    assert stats.elapsed_s == 4.5
    assert (stats.chunks, stats.tokens) == (2, 5)
    assert stats.tokens_per_s == 4 / 2.0


def test_stream_stats_without_tokens_have_no_first_token_or_rate(clock: FakeMonotonic) -> None:
    state = StreamState(JOB, started=clock.now)
    clock.now += 3.0
    stats = state.stats()
    assert stats.first_token_s is None
    assert stats.elapsed_s == 3.0
    assert stats.tokens_per_s == 0.0


def test_result_before_the_terminal_frame_raises_result_not_ready() -> None:
    state = StreamState(JOB)
    state.apply(token(1, "a", [1]))
    with pytest.raises(ResultNotReady, match="once the stream is consumed"):
        state.outcome()


def test_done_frame_ends_the_stream_with_its_result(make_result: MakeResult) -> None:
    result = make_result(job_id=JOB)
    state = StreamState(JOB)
    state.apply(token(0, "a", [1]))
    state.apply(DoneFrame(job_id=JOB, epoch=0, seq=1, data=result))
    assert state.done
    assert state.outcome() == result


def test_error_frame_makes_outcome_raise_job_failed() -> None:
    state = StreamState(JOB)
    error = ErrorData(code="model_load_failed", message="bad magic", retryable=False)
    state.apply(ErrorFrame(job_id=JOB, epoch=0, seq=0, data=error))
    assert state.done
    with pytest.raises(JobFailed) as caught:
        state.outcome()
    failed = caught.value
    assert (failed.job_id, failed.error_code, failed.error_message) == (
        JOB,
        "model_load_failed",
        "bad magic",
    )
    assert failed.retryable is False
    assert str(failed) == f"job {JOB} failed (model_load_failed): bad magic"


def test_resume_frame_drops_text_beyond_the_committed_chars() -> None:
    state = StreamState(JOB)
    state.apply(token(0, "Once upon", [1, 2]))
    resume = ResumeData(from_window=0, committed_tokens=1, committed_chars=4)
    state.apply(ResumeFrame(job_id=JOB, epoch=1, seq=0, data=resume))
    state.apply(token(1, " upon", [2]))
    assert state.text == "Once upon"


def test_a_repair_asked_for_at_a_window_is_not_made_after_later_text() -> None:
    # After a hole, a window frame asks for the checkpoint up to it; a checkpoint that only
    # catches up once later text arrived must not replace that text.
    state = StreamState(JOB)
    state.apply(TokenFrame(job_id=JOB, epoch=0, seq=1, data=TokenData(text="ab", token_ids=[1])))
    data = WindowData(window=1, token_ids=[3], text="d", tokens_total=3)
    state.apply(WindowFrame(job_id=JOB, epoch=0, seq=5, data=data))  # seqs 2-4 lost
    assert state.repair_through == 2
    state.apply(TokenFrame(job_id=JOB, epoch=0, seq=6, data=TokenData(text="e", token_ids=[4])))
    assert state.repair_through is None and state.gap


# Placement: priority and expiry.


@pytest.mark.parametrize("priority", [-1, 10])
def test_placement_rejects_a_priority_outside_0_to_9(priority: int) -> None:
    with pytest.raises(InvalidJob, match=f"priority must be 0-9, got {priority}"):
        Placement(priority=priority)


@pytest.mark.parametrize("priority", [0, 9])
def test_placement_accepts_the_priority_bounds(priority: int) -> None:
    assert Placement(priority=priority).priority == priority


@pytest.mark.parametrize("expires_in_s", [0, 0.0, -1.0])
def test_placement_rejects_a_non_positive_expiry(expires_in_s: float) -> None:
    with pytest.raises(InvalidJob, match="expires_in must be positive"):
        Placement(expires_in_s=expires_in_s)


def test_placement_expiry_is_that_long_after_submission_in_milliseconds() -> None:
    assert Placement(expires_in_s=2.5).expires_ms(1000) == 3500


def test_placement_without_an_expiry_never_expires() -> None:
    assert Placement().expires_ms(5) == 0


# Dispatch: what the broker sees.


@pytest.mark.parametrize(("priority", "broker"), [(9, 0), (5, 4), (0, 9)])
def test_broker_priority_serves_genq_priority_9_first(priority: int, broker: int) -> None:
    assert broker_priority(priority) == broker


def test_dispatch_argsrepr_names_the_job_model_and_batch_but_never_the_prompt() -> None:
    prompt = "my very private prompt"
    record = JobRecord(
        spec=JobSpec(prompt=prompt, model="tiny"),
        state=JobState.QUEUED,
        epoch=3,
        queue="cpu.tiny",
        submitted_ms=1,
        batch_id="batch_7",
    )
    job = Dispatch(PreparedJob(JOB, record).request, queue="cpu.tiny", priority=5, model="tiny")
    shown = job.argsrepr
    assert JOB in shown
    assert "epoch=3" in shown
    assert "model=tiny" in shown
    assert "batch=batch_7" in shown
    assert prompt not in shown


def test_dispatch_argsrepr_of_a_job_outside_a_batch_names_no_batch() -> None:
    job = Dispatch(GenerateRequest(job_id=JOB), queue="cpu.tiny", priority=5, model="tiny")
    assert job.argsrepr == f"job={JOB} epoch=0 model=tiny"
