"""The relay section: its throughput against the read-half, write-half and Redis baselines,
and a profile of the relay loop when it misses the target."""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path

from ops.bench import relay_profile
from ops.bench.measure import percentile
from ops.bench.relay_rate import (
    GENQ_RELAY,
    RELAY_READ,
    TARGET_FPS,
    TARGET_OF_XADD,
    WRITE_NAME,
    XADD_NAME,
    Figure,
    RelayOptions,
    hop_latency,
    measure,
)
from ops.bench.report import met, say
from ops.bench.stack import local_stack
from ops.bench.tokenframes import CHUNK_TOKENS, sample_frame

HOP_FRAMES = 200


def options(args: argparse.Namespace) -> RelayOptions:
    return RelayOptions(args.relay_seconds, args.relay_baseline_seconds, args.relay_jobs, 500)


def section(args: argparse.Namespace, cache: Path) -> None:
    opts = options(args)
    size = len(sample_frame("0" * 32, 1234, 1_700_000_000_000))
    say(
        f"load: {opts.jobs} jobs round-robin, {size}-byte token frames ({CHUNK_TOKENS} tokens), "
        f"pipelines of {opts.batch} PUBLISH from one process, held back while the subscriber "
        "is over 4 MB behind; rates from the streams' XLEN (relays) or a counter (subscribers), "
        "after 1 s of warm-up; every phase in two turns, alternating"
    )
    with local_stack(cache, {}, workers=0, relay=False) as stack:
        figures = measure(stack, opts)
        say("", *table(figures), "")
        relay = _named(figures, GENQ_RELAY.name)
        _verdict(figures, relay)
        _hop(hop_latency(stack, HOP_FRAMES), HOP_FRAMES)
        missed = (
            relay.per_s < TARGET_FPS
            or relay.per_s < TARGET_OF_XADD * _named(figures, XADD_NAME).per_s
        )
        if args.relay_profile_seconds and (args.relay_profile or missed):
            result = relay_profile.profile(stack, opts, args.relay_profile_seconds)
            say(*relay_profile.describe(result))


def table(figures: Sequence[Figure]) -> list[str]:
    header = ("path", "frames/s", "median 1 s", "seconds", "all arrived", "CPU (share of a core)")
    rows = [header]
    for fig in figures:
        rate = fig.rate
        arrived = "-" if fig.complete is None else f"{'yes' if fig.complete else 'NO'}"
        if fig.published is not None:
            arrived += f" ({fig.published:,})"
        rows.append(
            (
                fig.name,
                f"{fig.per_s:,.0f}",
                f"{rate.median_per_s:,.0f}" if rate else "-",
                f"{rate.seconds:.1f}" if rate else "-",
                arrived,
                rate.cpu_text() if rate else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i in (0, 5) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _hop(took: Sequence[float], sent: int) -> None:
    if not took:
        say(f"one frame at a time: none of {sent} reached its stream")
        return
    ms = sorted(t * 1000 for t in took)
    say(
        f"one frame at a time, PUBLISH -> readable with XREAD (the hop a reader pays for "
        f"streams): median {statistics.median(ms):.2f} ms, p90 {percentile(ms, 90):.2f} ms, "
        f"max {ms[-1]:.2f} ms over {len(ms)} of {sent} frames"
    )


def _named(figures: Sequence[Figure], name: str) -> Figure:
    return next(fig for fig in figures if fig.name == name)


def _verdict(figures: Sequence[Figure], relay: Figure) -> None:
    rate = relay.per_s
    read = _named(figures, RELAY_READ.name).per_s
    write = _named(figures, WRITE_NAME).per_s
    xadd = _named(figures, XADD_NAME).per_s
    cpu = relay.rate.cpu.get("consumer", 0.0) if relay.rate else 0.0
    per_cpu = f"{rate / cpu:,.0f} frames per CPU-second of the relay" if cpu else "no CPU figure"
    say(
        f"genq relay: {rate:,.0f} frames/s sustained (target >= {TARGET_FPS:,}: "
        f"{met(rate >= TARGET_FPS)}); {per_cpu}",
        f"  {rate / xadd:.2f} x raw pipelined XADD in this run (target >= {TARGET_OF_XADD}: "
        f"{met(rate >= TARGET_OF_XADD * xadd)})"
        if xadd
        else "  (no XADD baseline: it moved nothing)",
        f"  {rate / read:.2f} x its read loop alone, {rate / write:.2f} x Relay.write alone (one "
        f"thread doing both in turn would manage {1 / (1 / read + 1 / write):,.0f})"
        if read and write and rate
        else "  (no baseline ratio: a phase moved nothing)",
    )
