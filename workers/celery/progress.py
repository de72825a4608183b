"""What Flower shows of a generate task: its progress while its job runs, as a custom Celery
task event (`task-progress`), and a one-line summary (the task's return value) when it ends.

Celery's event state, which Flower keeps, turns an event type it does not know into a custom
state (`PROGRESS`) and merges the event's fields into the task; Flower displays only Celery's
own task fields, so the readable progress goes in `result` ("running: 120 tokens, 2 windows
done, job <id>"), which the `task-succeeded` event then replaces with the summary. Celery ranks
a custom state below SUCCESS and FAILURE, so a late PROGRESS could not undo one, but it would
overwrite `result`: events are therefore sent from the task itself, synchronously, before it
returns, and Redis delivers them ahead of the worker's `task-succeeded` or `task-failed`.

A short job sends nothing: the first event waits a full `progress_interval_s` after the task
began, and the events of a task are at most one per interval.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from genq.common.schemas import GenerateRequest, JobState
from genq.workers.publishing.observe import AttemptInfo, JobObserver

PROGRESS_EVENT = "task-progress"  # Flower shows the task as PROGRESS

EventSender = Callable[..., Any]  # Celery's Task.send_event(type_, **fields)
Clock = Callable[[], float]

log = logging.getLogger(__name__)


class Throttle:
    """Says yes at most once per `interval_s` (never when it is 0), the first time a full
    interval after it was made."""

    def __init__(self, interval_s: float, clock: Clock = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._last = clock()

    def due(self) -> bool:
        if self.interval_s <= 0:
            return False
        now = self._clock()
        if now - self._last < self.interval_s:
            return False
        self._last = now
        return True


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class AttemptProgress(JobObserver):
    """One job attempt as Flower sees it: tokens so far, windows done, how it ended."""

    def __init__(self, info: AttemptInfo, task: TaskProgress) -> None:
        self.info = info
        self.windows = 0  # completed, a resume's committed ones included
        self.outcome: str | None = None  # set when the attempt ends
        self.reported = False  # a progress event went out
        self._task = task
        self._committed = 0  # tokens at the last completed window (resumed ones included)
        self._since_window = 0

    @property
    def total_tokens(self) -> int:
        """Tokens of the job so far. A resumed attempt counts the committed ones from its
        first completed window on (before that, only its own)."""
        return self._committed + self._since_window

    def started(self, info: AttemptInfo, from_window: int) -> None:
        self.windows = from_window

    def tokens(self, count: int) -> None:
        self._since_window += count
        self._task.maybe_report(self)

    def window_ended(self, window: int, tokens_total: int) -> None:
        self.windows = window + 1
        self._committed, self._since_window = tokens_total, 0
        self._task.maybe_report(self)

    def ended(self, outcome: str, first_token_ms: int | None) -> None:
        self.outcome = str(outcome)
        # `task-failed` leaves `result` as the last event set it: say failed, not running.
        if self.reported and outcome == JobState.FAILED:
            self._task.report(self, "failed")

    def fields(self, status: str) -> dict[str, Any]:
        """A progress event's fields: readable in `result`, structured beside it."""
        return {
            "result": f"{status}: {self._counts()} done, {self._job()}{self._attempt()}",
            "job_id": self.info.job_id,
            "tenant": self.info.tenant,
            "epoch": self.info.epoch,
            "model": self.info.model,
            "tokens": self.total_tokens,
            "windows": self.windows,
        }

    def summary(self) -> str:
        """The ended attempt, as the task's result."""
        outcome = self.outcome or "unfinished"
        return f"{self._job()}: {self._counts()}, {outcome}{self._attempt()}"

    def _job(self) -> str:
        """The job this attempt ran (with the fair share, not always the message's own: a
        ticket runs the fairest waiting job) and its tenant."""
        return f"job {self.info.job_id} (tenant {self.info.tenant})"

    def _counts(self) -> str:
        return f"{_plural(self.total_tokens, 'token')}, {_plural(self.windows, 'window')}"

    def _attempt(self) -> str:
        return f" (epoch {self.info.epoch})" if self.info.epoch else ""


class TaskProgress:
    """One generate task's progress: an observer per job attempt (`observe`, for
    workers.celery.jobs.run_jobs), events through `send` (the task's `send_event`), and the summary
    the task returns. Sending never fails a job: an error is logged once, and the job goes on
    without events."""

    def __init__(self, send: EventSender, interval_s: float, clock: Clock = time.monotonic) -> None:
        self._send = send
        self._throttle = Throttle(interval_s, clock)
        self._broken = False
        self.attempts: list[AttemptProgress] = []

    def observe(self, info: AttemptInfo) -> JobObserver:
        progress = AttemptProgress(info, self)
        self.attempts.append(progress)
        return progress

    def maybe_report(self, progress: AttemptProgress) -> None:
        if self._throttle.due():
            self.report(progress, "running")

    def report(self, progress: AttemptProgress, status: str) -> None:
        if self._broken:
            return
        progress.reported = True
        try:
            self._send(PROGRESS_EVENT, retry=False, **progress.fields(status))
        except Exception as exc:  # progress is for show: never worth a job
            self._broken = True
            log.warning(
                "job %s: progress event not sent (%s: %s); this task sends no more",
                progress.info.job_id,
                type(exc).__name__,
                exc,
            )

    def summary(self, requests: Sequence[GenerateRequest]) -> str:
        """The task's result, for Flower's Result column: the job's tokens and outcome, or a
        bundle's totals."""
        if len(requests) > 1:
            return _bundle_summary(requests, self.attempts)
        # The attempt the message ran: its own job's, or (a ticket) the fairest waiting job's.
        return self.attempts[-1].summary() if self.attempts else _not_run(requests[0].job_id)


def _not_run(job_id: str) -> str:
    return f"job {job_id}: not run (already ended, running elsewhere, or no job waiting)"


def _bundle_summary(requests: Sequence[GenerateRequest], ran: Sequence[AttemptProgress]) -> str:
    outcomes: dict[str, int] = {}
    for progress in ran:
        outcome = progress.outcome or "unfinished"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if len(requests) > len(ran):
        outcomes["not run"] = len(requests) - len(ran)
    counts = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items())
    tokens = sum(p.total_tokens for p in ran)
    tenants = ", ".join(sorted({p.info.tenant for p in ran}))  # a ticket's jobs: any tenant's
    whose = f" (tenants {tenants})" if tenants else ""
    first = requests[0].job_id
    return f"{len(requests)} jobs, first {first}{whose}: {_plural(tokens, 'token')}; {counts}"
