"""Submission: how fast a producer queues a large batch, and what memory that takes.

A 10,000-line JSONL batch is submitted with `Client.submit_batch(path)` by a producer process
of its own (ops/bench/submit_child.py), whose peak RSS is then the producer's alone. The
baseline, in the same run, is `Client.submit()` called once per job in another such process.
No worker runs: the jobs stay queued, which is all a submission does.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genq import Client
from ops.bench.report import BENCH_MODEL, mb, met, say
from ops.bench.stack import BenchProcess, Stack, local_stack, running
from ops.localstack import StackError

TARGET_JOBS_PER_S = 2_000.0
TARGET_PEAK_RSS = 150_000_000  # bytes, decimal MB as report.mb prints them
TOKENS = 16
CHILD_TIMEOUT_S = 600.0
KIB = 1024


@dataclass(frozen=True)
class Submitted:
    """What one producer process printed."""

    jobs: int
    seconds: float
    imports_kib: int
    ready_kib: int
    peak_kib: int  # VmHWM: the process's own high-water mark
    maxrss_kib: int  # ru_maxrss, which carries the parent's peak (see submit_child)
    batch_id: str = ""

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def peak(self) -> int:
        return self.peak_kib * KIB


def write_batch(path: Path, jobs: int) -> Path:
    """Short distinct prompts, genq's own line form."""
    with path.open("w") as file:
        for n in range(jobs):
            line = {
                "custom_id": f"s{n}",
                "prompt": f"Story {n}: once upon a time",
                "model": BENCH_MODEL,
                "max_tokens": TOKENS,
                "seed": n,
                "ignore_eos": True,
            }
            file.write(json.dumps(line) + "\n")
    return path


def run_child(stack: Stack, name: str, args: list[str]) -> Submitted:
    child = BenchProcess("ops.bench.submit_child", args, stack.cache / f"{name}.log", stack.env)
    with running(child):
        code = child.wait(CHILD_TIMEOUT_S)
        output = child.output()
    try:
        printed: dict[str, Any] = json.loads(output.splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        printed = {}
    if code != 0 or not printed:
        raise StackError(f"{name} exited with {code}; its output:\n{output[-2000:]}")
    return Submitted(**printed)


def section(args: argparse.Namespace, cache: Path) -> None:
    jobs, singles = args.submit_jobs, args.submit_single_jobs
    path = write_batch(cache / "submit-batch.jsonl", jobs)
    say(
        f"batch: {jobs:,} lines ({path.stat().st_size / 1e6:.1f} MB of JSONL), {TOKENS} tokens "
        f"each on {BENCH_MODEL!r}; redis-server only, no worker (the jobs stay queued); each "
        "producer is a process of its own"
    )
    with local_stack(cache, {}, workers=0, relay=False) as stack:
        batch = run_child(stack, "submit-batch", ["batch", str(path)])
        single = run_child(stack, "submit-single", ["single", str(path), str(singles)])
        with Client(stack.settings) as client:
            total = client.batch(batch.batch_id).status().total
    say(*describe(batch, single, total, jobs))


def describe(batch: Submitted, single: Submitted, total: int, expected: int) -> list[str]:
    rate, peak = batch.jobs_per_s, batch.peak
    return [
        f"  Client.submit_batch(path): {batch.jobs:,} jobs in {batch.seconds:.2f} s = "
        f"{rate:,.0f} jobs/s (target >= {TARGET_JOBS_PER_S:,.0f}: "
        f"{met(rate >= TARGET_JOBS_PER_S)})",
        f"  Client.submit() one by one: {single.jobs:,} jobs in {single.seconds:.2f} s = "
        f"{single.jobs_per_s:,.0f} jobs/s; batch / single: {rate / single.jobs_per_s:.1f}x",
        f"  producer RSS: {mb(batch.imports_kib * KIB)} after imports, "
        f"{mb(batch.ready_kib * KIB)} with the client connected; peak (VmHWM) {mb(peak)} "
        f"({mb(peak - batch.ready_kib * KIB, sign=True)} for the submission; target <= "
        f"{mb(TARGET_PEAK_RSS)}: {met(peak <= TARGET_PEAK_RSS)}); one by one: peak "
        f"{mb(single.peak)}",
        f"  (ru_maxrss reads {mb(batch.maxrss_kib * KIB)}: Linux carries the parent's peak "
        "across fork and exec into it, so it is the benchmark process's, not the producer's)",
        f"  batch status total: {total:,} (expected {expected:,}: {met(total == expected)})",
    ]
