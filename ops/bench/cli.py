"""`python -m ops.bench`: run the benchmark's sections and print what they measured."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genq import GenqError, Settings
from genq.common.registry import ModelRegistry
from ops.bench import batches, failover, fairness, relay, report, scale, slots, stream
from ops.bench.paths import BenchJobFailed
from ops.bench.report import DEFAULT_PROMPT, DEFAULT_SEED, default_model, say
from ops.bench.stack import cache_dir
from ops.localstack import StackError

EXIT_INTERRUPTED = 130
Section = Callable[[argparse.Namespace, Path], None]
SECTIONS: dict[str, Section] = {
    "stream": stream.section,
    "relay": relay.section,
    "recovery": failover.recovery,
    "handoff": failover.handoff,
    "memory": relay.memory,
    "submit": batches.submit,
    "overhead": batches.overhead,
    "remote": stream.remote,
    "slots": slots.section,
    "gateway": stream.gateway,
    "scale": scale.section,
    "fairness": fairness.section,
}
OPT_IN = ("scale", "fairness")  # run only when named: minutes each (scale needs root)
DESCRIPTION = """\
genq's benchmark (README: Benchmark). Each section starts a private stack as a user does,
prints figures with ratios against baselines of the same run, and targets as met or MISSED.

sections (--suite, in this order):
"""


def _options() -> dict[str, list[tuple[str, Callable[[str], Any] | None, Any, str]]]:
    """Each section's options: flag, type (None: a switch), default, help."""
    return {
        "general": [
            ("--suite", _suites, [s for s in SECTIONS if s not in OPT_IN],
                "comma-separated sections (default: all but scale and fairness)"),
            ("--model", str, default_model(), "registry model (gemma-3-270m if there, else tiny)"),
            ("--omp-spin", None, False, "leave OpenMP's idle threads spinning (README: Benchmark)"),
            ("--allow-stray-bytes", None, False, "do not ban the tiny model's non-UTF-8 byte "
                "tokens (with them llama_cpp.server re-decodes its stream, quadratically)"),
        ],
        "stream": [
            ("--jobs", _positive, 30, "measured jobs, in-process and genq"),
            ("--warmup", _natural, 3, "unmeasured jobs first, per path"),
            ("--no-server", None, False, "skip the gateway section's peer servers"),
            ("--max-tokens", _positive, None, "job size (2000 on tiny, 128 on a real model)"),
            ("--prompt", str, DEFAULT_PROMPT, "prompt"),
            ("--seed", _natural, DEFAULT_SEED, "sampler seed"),
        ],
        "relay": [
            ("--relay-seconds", _seconds, 12.0, "relay load, two turns (1 s warm-up each)"),
            ("--relay-baseline-seconds", _seconds, 6.0, "load per baseline"),
            ("--relay-jobs", _positive, 50, "concurrent job ids published"),
        ],
        "recovery": [
            ("--recovery-runs", _positive, 10, "killed jobs per lease TTL"),
            ("--lease-ttls", _ttls, [2.0, 5.0], "GENQ_LEASE_TTL_S values, comma-separated (2,5)"),
            ("--recovery-tokens", _positive, None, "job size (4000 on tiny, 240 otherwise)"),
            ("--recovery-window", _positive, None, "window_tokens (100 on tiny, 40 otherwise)"),
        ],
        "handoff": [
            ("--handoff-runs", _positive, 5, "signalled jobs"),
            ("--handoff-slots", _positive, 8, "each worker's GENQ_SLOTS"),
            ("--handoff-tokens", _positive, None, "job size (20000 on tiny, 400 otherwise)"),
            ("--handoff-window", _positive, None, "window_tokens (100 on tiny, 40 otherwise)"),
        ],
        "memory": [
            ("--memory-tokens", _positive, 100_000, "job size"),
            ("--memory-window", _positive, 128, "window_tokens"),
            ("--memory-interval-s", _seconds, 0.5, "RSS sampling period"),
        ],
        "submit": [
            ("--submit-jobs", _positive, 10_000, "batch lines"),
            ("--submit-single-jobs", _positive, 1_000, "Client.submit() calls, the baseline"),
        ],
        "overhead": [
            ("--overhead-jobs", _positive, batches.JOBS, "jobs"),
            ("--overhead-tokens", _positive, 16, "tokens per job"),
            ("--overhead-rounds", _positive, 3, "rounds of both sides"),
            ("--overhead-processes", _positive, batches.PROCESSES, "processes on each side"),
        ],
        "remote": [
            ("--remote-jobs", _positive, 5, "jobs per path per round"),
            ("--remote-tokens", _positive, 200, "tokens per job"),
            ("--remote-rounds", _positive, 20, "rounds of both paths"),
            ("--remote-concurrent-jobs", _positive, 16, "jobs at once per path (and --slots)"),
            ("--remote-concurrent-rounds", _positive, 5, "rounds of both concurrent bursts"),
        ],
        "slots": [
            ("--slots-jobs", _positive, 8, "jobs at once, and the worker's slots"),
            ("--slots-tokens", _positive, None, "tokens per job (128; 512 on tiny)"),
            ("--slots-rounds", _positive, 3, "rounds of every path, in turn"),
        ],
        "gateway": [
            ("--gateway-jobs", _positive, 10, "measured jobs per path"),
            ("--gateway-clients", _positive, 64, "SSE clients at once"),
        ],
        "scale": [
            ("--scale-jobs", _positive, scale.JOBS, "jobs per configuration"),
            ("--scale-tokens", _positive, scale.TOKENS, "tokens per job"),
            ("--scale-workers", scale.worker_counts, list(scale.WORKERS), "worker processes, "
                "comma-separated (1,2,4,8,16)"),
            ("--scale-relays", scale.worker_counts, list(scale.RELAYS), "relays, "
                "comma-separated (1,2: one, then two sharded)"),
        ],
        "fairness": [
            ("--fairness-seconds", _seconds, 60.0, "each run's planned length"),
            ("--fairness-long-tokens", _positive, None, "a long job's tokens (256 on tiny, 64 "
                "otherwise)"),
            ("--fairness-cost-jobs", _positive, 1000, "1-token jobs per batch of the cost rounds"),
        ],
    }  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    sections = "\n".join(
        textwrap.fill(_help(name), 92, initial_indent=f"  {name:<10}", subsequent_indent=" " * 12)
        for name in SECTIONS
    )
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench",
        description=DESCRIPTION + sections,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for name, options in _options().items():
        group = parser.add_argument_group(name)
        for flag, kind, default, text in options:
            if kind is None:
                group.add_argument(flag, action="store_true", help=text)
            else:
                shown = "" if default is None or isinstance(default, list) else f" ({default})"
                group.add_argument(flag, type=kind, default=default, help=text + shown)
    return parser.parse_args(argv)


def _help(name: str) -> str:
    return " ".join((SECTIONS[name].__doc__ or "").split())


def _suites(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section {', '.join(unknown) or '(none)'}; choose from {', '.join(SECTIONS)}"
        )
    return [name for name in SECTIONS if name in names]


def _ttls(text: str) -> list[float]:
    return [_seconds(part) for part in text.split(",") if part.strip()]


def _bounded(kind: type[int] | type[float], low: float, high: float, above: bool = False) -> Any:
    """A parser of `kind` from `low` (excluded where `above`) to `high`."""

    def parse(text: str) -> Any:
        value = kind(text)
        if not low <= value <= high or (above and value == low):
            raise argparse.ArgumentTypeError(f"must be {'over' if above else 'at least'} {low}")
        return value

    return parse


_natural, _positive = _bounded(int, 0, math.inf), _bounded(int, 1, math.inf)
_seconds = _bounded(float, 0, math.inf, above=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything the benchmark started is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (StackError, GenqError, BenchJobFailed, failover.FailoverFailed) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> None:
    say(report.machine(), report.versions())
    _prepare_model(args.model)
    started = time.monotonic()
    with cache_dir() as cache:
        for name in args.suite:
            say("", f"== {name}: {_help(name)}")
            began = time.monotonic()
            SECTIONS[name](args, cache)
            say(f"({name}: {time.monotonic() - began:.0f} s)")
    say("", f"benchmark: {time.monotonic() - started:.0f} s in all")


def _prepare_model(model: str) -> None:
    """Refuse an unknown or remote model before anything starts; make a model file made on
    first use before the workers race to."""
    registry = ModelRegistry.from_settings(Settings())
    config = registry.llama(model)
    began = time.monotonic()
    path = registry.local_path(model)
    say(
        f"model: {model} ({path}, {path.stat().st_size / 1e6:,.0f} MB, n_ctx {config.n_ctx}, "
        f"n_threads {config.n_threads or 'all'}; ready in {time.monotonic() - began:.1f} s)"
    )
