"""What a job attempt reports as it runs, beyond its frames: the seam where metrics
(workers.publishing.metrics) and Flower's progress events (workers.celery.progress) listen.

The frame publisher tells its observer about every chunk and window; the job runner tells it
how the attempt began and ended. Observers must be cheap (a short job calls them a few times)
and must never raise into generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AttemptInfo:
    """The attempt being observed: never the prompt."""

    job_id: str
    epoch: int
    model: str
    batch_id: str
    worker: str
    tenant: str = "default"  # whose job it is (genq.common.tenants)
    queue_wait_s: float = 0.0  # submitted until this attempt's claim


class JobObserver:
    """Does nothing: subclasses override what they need."""

    def started(self, info: AttemptInfo, from_window: int) -> None:
        """Claimed and about to generate; `from_window` > 0 when resuming a checkpoint."""

    def tokens(self, count: int) -> None:
        """A token chunk went out with `count` new tokens (counted as they are published,
        so a chunk held back for the final record is reported just before `ended`)."""

    def window_ended(self, window: int, tokens_total: int) -> None:
        """Window `window` (0-based) completed; `tokens_total` in the job so far, committed
        windows of earlier attempts included."""

    def ended(self, outcome: str, first_token_ms: int | None) -> None:
        """The attempt ended: `outcome` is succeeded, cancelled, failed, superseded (a
        newer attempt took the job over), abandoned (Redis was lost under it: it resumes
        elsewhere once Redis is back) or handed_off (the worker shut down and requeued it:
        genq.workers.celery.handoff). `first_token_ms`: when its first chunk went out
        (epoch milliseconds), None if it produced none. The `tokens` calls before this add
        up to the tokens this attempt generated (a resume's committed ones are not
        repeated)."""


class Observers(JobObserver):
    """Several observers as one."""

    def __init__(self, observers: Sequence[JobObserver]) -> None:
        self._all = tuple(observers)

    def started(self, info: AttemptInfo, from_window: int) -> None:
        for o in self._all:
            o.started(info, from_window)

    def tokens(self, count: int) -> None:
        for o in self._all:
            o.tokens(count)

    def window_ended(self, window: int, tokens_total: int) -> None:
        for o in self._all:
            o.window_ended(window, tokens_total)

    def ended(self, outcome: str, first_token_ms: int | None) -> None:
        for o in self._all:
            o.ended(outcome, first_token_ms)


NOBODY = JobObserver()
