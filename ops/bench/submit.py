"""Submission: a JSONL batch queued with `Client.submit_batch(path)` by a producer process of
its own (`python -m ops.bench.child batch`: its peak RSS is the producer's alone), against
`Client.submit()` once per job in another. No worker runs: the jobs stay queued.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from genq import Client
from ops.bench.report import BENCH_MODEL, mb, met, say
from ops.bench.stack import Stack, local_stack, serving

TARGET_JOBS_PER_S = 2_000.0
TARGET_PEAK_RSS = 150_000_000  # bytes, decimal MB as report.mb prints them
TOKENS = 16
CHILD_TIMEOUT_S = 600.0
KIB = 1024


def section(args: argparse.Namespace, cache: Path) -> None:
    """A 10,000-line batch queued with Client.submit_batch() by a producer process, no worker,
    against Client.submit() calls. Targets: >= 2,000 jobs/s; RSS <= 150 MB."""
    jobs, path = args.submit_jobs, cache / "submit-batch.jsonl"
    lines = [
        {"custom_id": f"s{n}", "prompt": f"Story {n}: once upon a time", "model": BENCH_MODEL,
         "max_tokens": TOKENS, "seed": n, "ignore_eos": True}
        for n in range(jobs)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    say(
        f"batch: {jobs:,} lines ({path.stat().st_size / 1e6:.1f} MB of JSONL), {TOKENS} tokens "
        f"each on {BENCH_MODEL!r}; redis-server only, no worker (the jobs stay queued); each "
        "producer is a process of its own"
    )
    with local_stack(cache, {}, workers=0, relay=False) as stack:
        batch = _child(stack, ["batch", str(path)])
        single = _child(stack, ["single", str(path), str(args.submit_single_jobs)])
        with Client(stack.settings) as client:
            total = client.batch(batch["batch_id"]).status().total
    rate, single_rate = batch["jobs"] / batch["seconds"], single["jobs"] / single["seconds"]
    peak, ready = batch["peak_kib"] * KIB, batch["ready_kib"] * KIB
    say(
        f"  Client.submit_batch(path): {batch['jobs']:,} jobs in {batch['seconds']:.2f} s = "
        f"{rate:,.0f} jobs/s (target >= {TARGET_JOBS_PER_S:,.0f}: "
        f"{met(rate >= TARGET_JOBS_PER_S)})",
        f"  Client.submit() one by one: {single['jobs']:,} jobs in {single['seconds']:.2f} s = "
        f"{single_rate:,.0f} jobs/s; batch / single: {rate / single_rate:.1f}x",
        f"  producer RSS: {mb(batch['imports_kib'] * KIB)} after imports, {mb(ready)} with the "
        f"client connected; peak (VmHWM) {mb(peak)} ({mb(peak - ready, sign=True)} for the "
        f"submission; target <= {mb(TARGET_PEAK_RSS)}: {met(peak <= TARGET_PEAK_RSS)}); one by "
        f"one: peak {mb(single['peak_kib'] * KIB)}",
        f"  (ru_maxrss reads {mb(batch['maxrss_kib'] * KIB)}: Linux carries the parent's peak "
        "across fork and exec into it, so it is the benchmark process's, not the producer's)",
        f"  batch status total: {total:,} (expected {jobs:,}: {met(total == jobs)})",
    )


def _child(stack: Stack, args: list[str]) -> dict[str, Any]:
    with serving(stack.bench("child", args, f"submit-{args[0]}")) as child:
        return child.printed(CHILD_TIMEOUT_S)
