"""genq end to end, as a subscriber sees it: Client.submit, then iterate the job's stream."""

from __future__ import annotations

import time
from dataclasses import dataclass

from common.frames import DoneFrame, ErrorFrame, TokenFrame
from ops.bench.measure import PathResult, Run
from ops.bench.workload import Workload
from producer.client import Client

NAME = "genq end to end"
STREAM_TIMEOUT_S = 120.0


class BenchJobFailed(RuntimeError):
    """A benchmark job ended with an error frame or fewer tokens than asked."""


@dataclass(frozen=True)
class JobOutcome:
    run: Run
    token_ids: list[int]
    chunks: int
    worker_tokens_per_s: float  # the worker's own figure, from the done frame


def run_once(client: Client, workload: Workload) -> JobOutcome:
    """Clock starts before submit (so the queue's cost is in first-token latency) and stops
    when the done frame arrives."""
    started = time.perf_counter()
    job = client.submit(workload.spec)
    first: float | None = None
    ids: list[int] = []
    chunks, ended, rate = 0, started, 0.0
    for frame in job.stream(timeout=STREAM_TIMEOUT_S):
        if isinstance(frame, TokenFrame):
            first = time.perf_counter() if first is None else first
            ids.extend(frame.data.token_ids)
            chunks += 1
        elif isinstance(frame, ErrorFrame):
            raise BenchJobFailed(f"job {job.job_id}: {frame.data.code}: {frame.data.message}")
        elif isinstance(frame, DoneFrame):
            ended = time.perf_counter()
            rate = frame.data.timings.tokens_per_s
    if first is None or len(ids) != workload.tokens:
        raise BenchJobFailed(f"job {job.job_id}: {len(ids)} tokens, expected {workload.tokens}")
    run = Run(len(ids), first - started, ended - first)
    return JobOutcome(run, ids, chunks, rate)


def result(outcomes: list[JobOutcome]) -> PathResult:
    return PathResult(NAME, [outcome.run for outcome in outcomes])
