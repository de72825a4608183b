"""The benchmark's own helper processes (`python -m ops.bench.<module>`): each in a session of
its own, its output in a log file, stopped with its whole group on the way out."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ops.localstack import StackError, stop_process, wait_for

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0


@dataclass
class BenchProcess:
    module: str
    args: Sequence[str]
    log: Path
    env: Mapping[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StackError(f"{self.module} is not running")
        return self.proc.pid

    @property
    def stdin(self) -> IO[bytes]:
        if self.proc is None or self.proc.stdin is None:
            raise StackError(f"{self.module} has no stdin")
        return self.proc.stdin

    def start(self, ready: str | None = None, stdin: bool = False) -> BenchProcess:
        """Started; with `ready`, once that text is in its log."""
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                env={**os.environ, **self.env},
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready is not None:
            try:
                wait_for(lambda: self._has(ready), READY_TIMEOUT_S, f"{self.module} ({self.log})")
            except BaseException:
                self.stop()
                raise
        return self

    def _has(self, text: str) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise StackError(f"{self.module} exited with {self.proc.returncode}; see {self.log}")
        return text in self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout_s: float) -> int:
        if self.proc is None:
            raise StackError(f"{self.module} was not started")
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"{self.module} did not end within {timeout_s:.0f}s") from exc

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            stop_process(self.proc, group=True, grace_s=STOP_GRACE_S)
            self.proc = None


@contextmanager
def running(
    proc: BenchProcess, ready: str | None = None, stdin: bool = False
) -> Iterator[BenchProcess]:
    """The process started, and stopped when the block ends however it ends."""
    try:
        yield proc.start(ready, stdin)
    finally:
        proc.stop()
