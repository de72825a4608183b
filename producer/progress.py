"""The command line's progress bar for batches: jobs ended of total, tokens/s and ETA, on
stderr, and only on a terminal (piped output stays clean)."""

from __future__ import annotations

import time
from typing import Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from genq.common.schemas import BatchStatus


class BatchProgress:
    def __init__(self, console: Console, label: str, total: int | None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self._task: TaskID = self._progress.add_task(label, total=total, rate="")
        self._tokens: tuple[float, int] | None = None  # (when, tokens) at the first reading

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def submitted(self, jobs: int) -> None:
        self._progress.update(self._task, completed=jobs)

    def advance(self, done: int) -> None:
        self._progress.update(self._task, completed=done)

    def update(self, status: BatchStatus) -> None:
        """A batch status read while waiting: jobs ended, and tokens/s since the first read."""
        now = time.monotonic()
        if self._tokens is None:
            self._tokens = (now, status.tokens)
        since, first = self._tokens
        rate = (status.tokens - first) / (now - since) if now > since else 0.0
        self._progress.update(
            self._task, total=status.total, completed=status.ended, rate=f"{rate:,.0f} tok/s"
        )
