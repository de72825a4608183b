"""workers.celery.progress: Flower's progress events (throttled, never for a short job, never fatal)
and the summary a task returns."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from genq.common.schemas import GenerateRequest, JobState
from genq.workers.celery.progress import PROGRESS_EVENT, TaskProgress, Throttle
from genq.workers.publishing.observe import AttemptInfo, JobObserver

JOB = "a" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Events:
    """Records what a task's send_event is given."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def __call__(self, type_: str, **fields: Any) -> None:
        self.sent.append({"type": type_, **fields})


def info(job_id: str = JOB, epoch: int = 0) -> AttemptInfo:
    return AttemptInfo(job_id, epoch, "tiny", "", "w@host", "acme")


def started(interval_s: float = 1.0) -> tuple[Clock, Events, TaskProgress, JobObserver]:
    """A task's progress with one attempt started, on a fake clock."""
    clock, events = Clock(), Events()
    task = TaskProgress(events, interval_s, clock)
    attempt = task.observe(info())
    attempt.started(info(), 0)
    return clock, events, task, attempt


def test_throttle_says_yes_a_full_interval_after_it_starts_then_once_per_interval() -> None:
    clock = Clock()
    throttle = Throttle(1.0, clock)
    answers = []
    for now in (100.5, 100.99, 101.0, 101.5, 101.99, 102.1, 102.2):
        clock.now = now
        answers.append(throttle.due())
    assert answers == [False, False, True, False, False, True, False]


def test_throttle_of_zero_never_says_yes() -> None:
    clock = Clock()
    throttle = Throttle(0.0, clock)
    clock.now += 3600
    assert not throttle.due()


def test_a_job_shorter_than_the_interval_sends_no_event_and_sums_up_its_tokens() -> None:
    clock, events, task, attempt = started()
    clock.now += 0.004
    attempt.tokens(16)
    attempt.window_ended(0, 16)
    attempt.ended(JobState.SUCCEEDED, 1)
    assert events.sent == []
    summary = task.summary([GenerateRequest(job_id=JOB)])
    assert summary == f"job {JOB} (tenant acme): 16 tokens, 1 window, succeeded"


def test_a_long_job_reports_tokens_and_windows_at_most_once_per_interval() -> None:
    clock, events, task, attempt = started()
    for chunk in range(16):  # 16 chunks of 16 tokens, 0.25 s apart; a window every 4 chunks
        clock.now += 0.25
        attempt.tokens(16)
        if chunk % 4 == 3:
            attempt.window_ended(chunk // 4, (chunk + 1) * 16)
    attempt.ended(JobState.SUCCEEDED, 1)
    assert [e["tokens"] for e in events.sent] == [64, 128, 192, 256]  # at 1, 2, 3 and 4 s
    first = events.sent[0]
    assert first["type"] == PROGRESS_EVENT
    assert first["result"] == f"running: 64 tokens, 0 windows done, job {JOB} (tenant acme)"
    assert (first["job_id"], first["epoch"], first["model"]) == (JOB, 0, "tiny")
    assert first["tenant"] == "acme"
    assert [e["windows"] for e in events.sent] == [0, 1, 2, 3]
    assert all(e["retry"] is False for e in events.sent)  # never stalls generation
    summary = task.summary([GenerateRequest(job_id=JOB)])
    assert summary == f"job {JOB} (tenant acme): 256 tokens, 4 windows, succeeded"


def test_a_job_that_fails_after_reporting_progress_says_so_in_its_last_event() -> None:
    clock, events, _, attempt = started()
    clock.now += 1.5
    attempt.tokens(30)
    attempt.ended(JobState.FAILED, 1)
    assert [e["result"].split(":")[0] for e in events.sent] == ["running", "failed"]


def test_a_job_that_fails_before_any_progress_event_sends_none() -> None:
    _, events, _, attempt = started()
    attempt.ended(JobState.FAILED, None)
    assert events.sent == []


def test_an_event_that_cannot_be_sent_is_logged_once_and_the_job_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, calls = Clock(), []

    def broken(type_: str, **fields: Any) -> None:
        calls.append(type_)
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    task = TaskProgress(broken, 0.5, clock)
    attempt = task.observe(info())
    attempt.started(info(), 0)
    with caplog.at_level(logging.WARNING, logger="genq.workers.celery.progress"):
        for _ in range(5):
            clock.now += 1.0
            attempt.tokens(16)
        attempt.ended(JobState.SUCCEEDED, 1)
    assert calls == [PROGRESS_EVENT]  # tried once, then no more for this task
    assert len(caplog.records) == 1
    assert "progress event not sent (ConnectionError" in caplog.records[0].getMessage()
    assert task.summary([GenerateRequest(job_id=JOB)]).endswith("80 tokens, 0 windows, succeeded")


def test_a_resumed_attempt_counts_the_committed_windows_and_names_its_attempt() -> None:
    task = TaskProgress(Events(), 1.0, Clock())
    attempt = task.observe(info(epoch=1))
    attempt.started(info(epoch=1), 2)
    attempt.tokens(10)
    attempt.window_ended(2, 250)  # the third window ends the job: 250 tokens in all
    attempt.ended(JobState.SUCCEEDED, 1)
    summary = task.summary([GenerateRequest(job_id=JOB, epoch=1)])
    assert summary == f"job {JOB} (tenant acme): 250 tokens, 3 windows, succeeded (epoch 1)"


def test_a_job_with_nothing_to_run_says_so() -> None:
    task = TaskProgress(Events(), 1.0, Clock())
    assert task.summary([GenerateRequest(job_id=JOB)]) == (
        f"job {JOB}: not run (already ended, running elsewhere, or no job waiting)"
    )


def test_a_bundle_sums_up_its_jobs() -> None:
    task = TaskProgress(Events(), 1.0, Clock())
    requests = [GenerateRequest(job_id=c * 32, batch_id="b") for c in "abc"]
    for request, outcome in zip(requests[:2], ["succeeded", "cancelled"], strict=True):
        attempt = task.observe(info(request.job_id))
        attempt.started(info(request.job_id), 0)
        attempt.tokens(8)
        attempt.window_ended(0, 8)
        attempt.ended(outcome, 1)
    assert task.summary(requests) == (
        f"3 jobs, first {'a' * 32} (tenants acme): 16 tokens; 1 succeeded, 1 cancelled, 1 not run"
    )
