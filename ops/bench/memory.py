"""Memory over a long job: resident memory of the relay, of a reader following the job's
stream (ops/bench/reader.py, a process of its own) and of the worker's pool process, sampled
every `interval_s` from before the job starts until the reader has read its last frame.

The worker and the relay first run a short job, so that model loading and first-use
allocations are not counted as growth.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from genq import Client
from ops.bench.reader import READY
from ops.bench.report import mb, met, say
from ops.bench.stack import BenchProcess, Stack, local_stack, running
from ops.localstack import StackError

FLAT_BYTES = 10_000_000  # target: relay and reader within 10 MB of where they started
FLAT = ("relay", "reader")
WARM_TOKENS = 512
JOB_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class MemoryJob:
    max_tokens: int
    window_tokens: int
    model: str = "tiny"
    seed: int = 5

    def fields(self, max_tokens: int | None = None) -> dict[str, Any]:
        return {
            "prompt": "Once upon a time",
            "model": self.model,
            "max_tokens": max_tokens or self.max_tokens,
            "window_tokens": self.window_tokens,
            "seed": self.seed,
            "ignore_eos": True,
        }


@dataclass
class Series:
    """One process's resident memory over the job, in bytes."""

    role: str
    samples: list[int] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.samples[0]

    @property
    def end(self) -> int:
        return self.samples[-1]

    @property
    def peak(self) -> int:
        return max(self.samples)

    @property
    def growth(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class MemoryResult:
    series: list[Series]
    seconds: float  # submit until the reader had read the terminal frame
    reader: dict[str, int]  # what the reader printed
    redis_used: int  # redis-server's used_memory at the end
    samples: int


def measure(cache: Path, job: MemoryJob, interval_s: float) -> MemoryResult:
    with local_stack(cache, {}, workers=1) as stack, Client(stack.settings) as client:
        client.submit(**job.fields(WARM_TOKENS)).result(timeout=JOB_TIMEOUT_S)
        reader = BenchProcess("ops.bench.reader", [], cache / "reader.log", stack.env)
        with running(reader, ready=READY, stdin=True):
            procs = _processes(stack, reader)
            series = {role: Series(role) for role in procs}
            _sample(procs, series)
            started = time.monotonic()
            handle = client.submit(**job.fields())
            reader.stdin.write(f"{handle.job_id}\n".encode())
            reader.stdin.flush()
            while reader.running() and time.monotonic() - started < JOB_TIMEOUT_S:
                _sample(procs, series)
                time.sleep(interval_s)
            seconds = time.monotonic() - started
            _sample(procs, series)
            stack.check_alive()
            printed = _reading(reader)
        used = int(redis.Redis.from_url(stack.settings.redis_url).info("memory")["used_memory"])
    samples = min(len(s.samples) for s in series.values())
    return MemoryResult(list(series.values()), seconds, printed, used, samples)


def _reading(reader: BenchProcess) -> dict[str, int]:
    """What the reader printed last; StackError with its output if that is not its summary."""
    output = reader.output()
    try:
        reading: dict[str, int] = json.loads(output.splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise StackError(f"the reader did not finish; its output:\n{output[-2000:]}") from None
    return reading


def _processes(stack: Stack, reader: BenchProcess) -> dict[str, psutil.Process]:
    if stack.relay is None or stack.relay.proc is None or not stack.workers:
        raise StackError("the memory section needs a relay and a worker")
    worker = stack.workers[0].proc
    if worker is None:
        raise StackError("the worker is not running")
    pool = psutil.Process(worker.pid).children()
    return {
        "relay": psutil.Process(stack.relay.proc.pid),
        "reader": psutil.Process(reader.pid),
        "worker pool process": pool[0] if pool else psutil.Process(worker.pid),
    }


def _sample(procs: dict[str, psutil.Process], series: dict[str, Series]) -> None:
    """Each process's RSS now; a process that has exited keeps its last sample."""
    for role, proc in procs.items():
        with contextlib.suppress(psutil.NoSuchProcess):
            series[role].samples.append(int(proc.memory_info().rss))


def section(args: argparse.Namespace, cache: Path) -> None:
    job = MemoryJob(args.memory_tokens, args.memory_window)
    say(
        f"job: {job.max_tokens:,} tokens in windows of {job.window_tokens} on {job.model!r}, EOS "
        f"banned; resident memory every {args.memory_interval_s:g} s from before submit until "
        "the reader has read the done frame (after a short warm-up job)"
    )
    result = measure(cache, job, args.memory_interval_s)
    say(*describe(result))


def describe(result: MemoryResult) -> list[str]:
    read = result.reader
    lines = [f"  the job took {result.seconds:.1f} s; {result.samples} samples"]
    width = max(len(s.role) for s in result.series)
    for series in result.series:
        verdict = "informational" if series.role not in FLAT else met(_flat(series))
        lines.append(
            f"  {series.role:<{width}}  start {mb(series.start)}, peak {mb(series.peak)}, end "
            f"{mb(series.end)}: growth {mb(series.growth, sign=True)}, peak - start "
            f"{mb(series.peak - series.start, sign=True)} (flat within {mb(FLAT_BYTES)}: {verdict})"
        )
    lines += [
        f"  the reader read {read['frames']:,} frames, {read['tokens']:,} tokens (the job: "
        f"{read['completion_tokens']:,}); its stream keeps the text by design: "
        f"{read['text_chars']:,} characters, {mb(read['text_bytes'])} as UTF-8",
        f"  redis-server used_memory at the end: {mb(result.redis_used)} (the job's stream, "
        "checkpoint and record)",
    ]
    return lines


def _flat(series: Series) -> bool:
    return series.peak - series.start <= FLAT_BYTES and abs(series.growth) <= FLAT_BYTES
