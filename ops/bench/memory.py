"""Memory over a long job, from before it starts until the reader has read its last frame,
after a short job (model loading is not growth)."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import psutil
import redis

from genq import Client
from ops.bench.child import READY
from ops.bench.report import mb, met, say
from ops.bench.stack import local_stack, pid, serving

FLAT_BYTES = 10_000_000  # target: relay and reader within 10 MB of where they started
FLAT = ("relay", "reader")
WARM_TOKENS = 512
JOB_TIMEOUT_S = 1800.0


def section(args: argparse.Namespace, cache: Path) -> None:
    """RSS of the relay, a reader process and the worker over a 100,000-token job on the tiny
    model (target: relay and reader flat within 10 MB)."""
    job = {"prompt": "Once upon a time", "model": "tiny", "max_tokens": args.memory_tokens,
           "window_tokens": args.memory_window, "seed": 5, "ignore_eos": True}  # fmt: skip
    say(
        f"job: {args.memory_tokens:,} tokens in windows of {args.memory_window} on 'tiny', EOS "
        f"banned; resident memory every {args.memory_interval_s:g} s from before submit until "
        "the reader has read the done frame (after a short warm-up job)"
    )
    with local_stack(cache, {}, workers=1) as stack, Client(stack.settings) as client:
        client.submit(**{**job, "max_tokens": WARM_TOKENS}).result(timeout=JOB_TIMEOUT_S)
        with serving(stack.bench("child", ["reader"], "reader", READY, stdin=True)) as reader:
            worker = psutil.Process(pid(stack.workers[0]))
            procs = {
                "relay": psutil.Process(pid(stack.relay)),
                "reader": psutil.Process(pid(reader)),
                "worker pool process": (worker.children() or [worker])[0],
            }
            samples: dict[str, list[int]] = {role: [] for role in procs}
            _sample(procs, samples)
            started = time.monotonic()
            reader.send(client.submit(**job).job_id)
            while reader.running() and time.monotonic() - started < JOB_TIMEOUT_S:
                _sample(procs, samples)
                time.sleep(args.memory_interval_s)
            seconds = time.monotonic() - started
            _sample(procs, samples)
            stack.check_alive()
            read = reader.printed(JOB_TIMEOUT_S)
        used = int(redis.Redis.from_url(stack.settings.redis_url).info("memory")["used_memory"])
    count = min(len(series) for series in samples.values())
    say(f"  the job took {seconds:.1f} s; {count} samples")
    width = max(map(len, samples))
    say(*(f"  {role:<{width}}  {_series(role, series)}" for role, series in samples.items()))
    say(
        f"  the reader read {read['frames']:,} frames, {read['tokens']:,} tokens (the job: "
        f"{read['completion_tokens']:,}); its stream keeps the text by design: "
        f"{read['text_chars']:,} characters, {mb(read['text_bytes'])} as UTF-8",
        f"  redis-server used_memory at the end: {mb(used)} (the job's stream, checkpoint and "
        "record)",
    )


def _sample(procs: dict[str, psutil.Process], samples: dict[str, list[int]]) -> None:
    """Each process's RSS now; a process that has exited keeps its last sample."""
    for role, proc in procs.items():
        with contextlib.suppress(psutil.NoSuchProcess):
            samples[role].append(int(proc.memory_info().rss))


def _series(role: str, rss: list[int]) -> str:
    start, peak, end = rss[0], max(rss), rss[-1]
    flat = peak - start <= FLAT_BYTES and abs(end - start) <= FLAT_BYTES
    return (
        f"start {mb(start)}, peak {mb(peak)}, end {mb(end)}: growth {mb(end - start, sign=True)}, "
        f"peak - start {mb(peak - start, sign=True)} (flat within {mb(FLAT_BYTES)}: "
        f"{met(flat) if role in FLAT else 'informational'})"
    )
