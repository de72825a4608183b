"""genq end to end, as a subscriber sees it: Client.submit, then iterate the job's stream."""

from __future__ import annotations

import time
from dataclasses import dataclass

from genq.common.frames import DoneFrame, ErrorFrame, TokenFrame
from genq.producer.client import Client
from ops.bench.measure import PathResult, Run
from ops.bench.workload import Workload

NAME = "genq end to end"
STREAM_TIMEOUT_S = 120.0


class BenchJobFailed(RuntimeError):
    """A benchmark job ended with an error frame or fewer tokens than asked."""


@dataclass(frozen=True)
class JobOutcome:
    job_id: str
    run: Run
    token_ids: list[int]
    chunks: int
    worker_tokens_per_s: float  # the worker's own figure, from the done frame


def run_once(client: Client, workload: Workload) -> JobOutcome:
    """One job that must come out exactly `workload.tokens` tokens long."""
    outcome = stream_job(client, workload)
    if outcome.run.tokens != workload.tokens:
        raise BenchJobFailed(
            f"job {outcome.job_id}: {outcome.run.tokens} tokens, expected {workload.tokens}"
        )
    return outcome


def stream_job(client: Client, workload: Workload) -> JobOutcome:
    """Clock starts before submit (so the queue's cost is in first-token latency) and stops
    when the done frame arrives. Tokens are counted by the frames' `count`: a remote model's
    frames carry no token ids."""
    started = time.perf_counter()
    job = client.submit(workload.spec)
    first: float | None = None
    ids: list[int] = []
    tokens, chunks, ended, rate = 0, 0, started, 0.0
    for frame in job.stream(timeout=STREAM_TIMEOUT_S):
        if isinstance(frame, TokenFrame):
            first = time.perf_counter() if first is None else first
            ids.extend(frame.data.token_ids)
            tokens += frame.data.count
            chunks += 1
        elif isinstance(frame, ErrorFrame):
            raise BenchJobFailed(f"job {job.job_id}: {frame.data.code}: {frame.data.message}")
        elif isinstance(frame, DoneFrame):
            ended = time.perf_counter()
            rate = frame.data.timings.tokens_per_s
    if first is None:
        raise BenchJobFailed(f"job {job.job_id}: no token arrived")
    run = Run(tokens, first - started, ended - first)
    return JobOutcome(job.job_id, run, ids, chunks, rate)


def result(outcomes: list[JobOutcome]) -> PathResult:
    return PathResult(NAME, [outcome.run for outcome in outcomes])
