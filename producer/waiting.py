"""Waiting on a batch, with no I/O: what the sync and async batch handles (producer/batches.py)
and listeners (producer/listeners.py) share. `Waiting` is one `wait()`: its deadline, its
progress callback and how long to wait next; `ResultPage` a page of job ids on their way to
results lines; `Heard` one wait for announced endings."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from genq.common.errors import StreamTimeout
from genq.common.schemas import BatchStatus, ResultLine
from genq.common.store.batches import result_line


class Waiting:
    """One `wait()` without I/O: its deadline, its progress callback, the bounded wait for the
    next announcement, and the timeout error."""

    def __init__(
        self,
        batch_id: str,
        timeout: float | None,
        progress: Callable[[BatchStatus], None] | None,
        poll_s: float,
    ) -> None:
        self.batch_id, self.progress, self.poll_s = batch_id, progress, poll_s
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def over(self, status: BatchStatus) -> bool:
        """True once every job ended; StreamTimeout when the deadline passed first."""
        if self.progress is not None:
            self.progress(status)
        if status.complete:
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise StreamTimeout(
                f"batch {self.batch_id}: {status.ended} of {status.total} jobs ended "
                "within the timeout"
            )
        return False

    def wait_s(self) -> float:
        if self.deadline is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, self.deadline - time.monotonic()))


class ResultPage:
    """One page of a batch's job ids on their way to results lines, without I/O. After an
    announcement only the announced jobs at the head of the page are read (each job's fields
    are read about once, however large the batch); after a quiet bounded wait, the whole rest
    of the page is, in case an ending went unheard."""

    def __init__(self, job_ids: list[str]) -> None:
        self.pending = job_ids
        self.heard: set[str] = set()
        self.quiet = True  # nothing announced since the last read: read the whole rest

    def to_read(self) -> list[str]:
        if self.quiet:
            return self.pending
        head: list[str] = []
        for job_id in self.pending:
            if job_id not in self.heard:
                break
            head.append(job_id)
        return head

    def take(self, job_ids: list[str], rows: Sequence[Any]) -> list[ResultLine]:
        """The lines of the jobs read that ended, up to the first one that has not."""
        lines = []
        for job_id, values in zip(job_ids, rows, strict=True):
            line = result_line(job_id, values)
            if line is None:
                break
            lines.append(line)
        self.pending = self.pending[len(lines) :]
        return lines

    def hear(self, job_ids: set[str]) -> None:
        self.heard |= job_ids
        self.quiet = not job_ids


class Heard:
    """One wait for announcements of jobs that ended: the first one is waited for until
    `timeout_s` has passed, then whatever else came meanwhile is taken without waiting."""

    def __init__(self, timeout_s: float) -> None:
        self.job_ids: set[str] = set()
        self._deadline = time.monotonic() + timeout_s
        self._left = timeout_s
        self._over = False

    def timeout(self) -> float | None:
        """How long the next read of a message may wait; None once the wait is over."""
        if self._over:
            return None
        if self.job_ids:
            return 0.0
        self._left = self._deadline - time.monotonic()
        return max(self._left, 0.0)

    def take(self, message: dict[str, Any] | None) -> None:
        """A message read (None: none came within the read's timeout)."""
        if message is not None:
            self.job_ids.add(str(message["data"]))
        elif self.job_ids or self._left <= 0:
            self._over = True
