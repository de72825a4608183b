"""`python -m ops.bench`: run the benchmark's sections and print what they measured."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from genq import GenqError, Settings
from genq.common.registry import ModelRegistry
from ops.bench import (
    gateway,
    handoff,
    memory,
    overhead,
    paths,
    recovery,
    relay,
    remote,
    report,
    slots,
    stream,
    submit,
)
from ops.bench.report import DEFAULT_PROMPT, DEFAULT_SEED, TINY, default_model, say
from ops.bench.stack import cache_dir
from ops.localstack import StackError

EXIT_INTERRUPTED = 130
MAX_INTERVAL_MS = 10_000.0  # GENQ_CHUNK_INTERVAL_MS's bound in common/settings.py
Section = Callable[[argparse.Namespace, Path], None]
SECTIONS: dict[str, tuple[str, Section]] = {
    "stream": (
        "streaming: tok/s and first-token latency, genq vs in-process [--model]",
        stream.section,
    ),
    "relay": ("relay throughput: token frames from pub/sub into streams", relay.section),
    "recovery": (
        "recovery: a worker SIGKILLed mid-job, the job resumed elsewhere [--model]",
        recovery.section,
    ),
    "handoff": (
        "hand-off: a worker SIGTERMed mid-job, its job resumed elsewhere at once [--model]",
        handoff.section,
    ),
    "memory": ("memory: relay and reader RSS over a long job [tiny model]", memory.section),
    "submit": ("submission: a 10,000-job batch queued by one producer", submit.section),
    "overhead": (
        "overhead: 200 short jobs on 2 workers, genq vs in-process [--model]",
        overhead.section,
    ),
    "remote": (
        "remote: genq's remote backend vs the same llama_cpp.server streamed directly [tiny model]",
        remote.section,
    ),
    "slots": (
        "slots: 8 jobs at once on one worker (continuous batching) vs in-process batched "
        "llama.cpp, llama-server -np 8 and 8 one-slot processes [--model]",
        slots.section,
    ),
    "gateway": (
        "gateway: the openai SDK through `genq serve` vs genq's client, vs llama_cpp.server and "
        "llama-server; 64 SSE clients on one gateway [--model]",
        gateway.section,
    ),
}
DESCRIPTION = """\
genq's benchmark. Every section starts its own private stack the way a user does
(redis-server, `genq relay`, `genq worker`; ops/localstack.py), drives it with genq's public
client, prints figures with ratios against baselines measured in the same run, and stops
everything it started on the way out (Ctrl-C included). Targets are printed as met or
MISSED; it asserts nothing. stream, recovery, handoff, overhead, slots and gateway run on
--model (default: gemma-3-270m when genq[gemma] is installed, else tiny); memory and remote
on the tiny model; relay and submit run no model. In-process baselines are llama-cpp-python
alone (its `Llama`, or its low-level API in ops/bench/batched.py), never genq's internals.

sections (--suite, in this order):
  stream    one job (2000 tokens on tiny, 128 on a real model): in process with
            `Llama.generate()` and genq end to end, job by job in turn (--jobs, 30), then
            llama_cpp.server over SSE. Targets: genq >= 0.90 x in-process tok/s; <= 15 ms
            first-token latency added (median).
  relay     frames/s `genq relay` moves from pub/sub into the jobs' streams, sustained, beside
            a raw pattern subscriber that only counts and raw pipelined XADD of the same
            frames (targets: >= 100,000 frames/s and >= 0.6 x XADD); then the PUBLISH ->
            XREAD hop of one frame at a time.
  recovery  SIGKILL the worker of a long windowed job with a second worker idle, per lease
            TTL, --recovery-runs times: kill -> next token (target <= TTL + 2 s), tokens
            recomputed per resume (target: median <= 2 chunks), final text = uninterrupted.
  handoff   SIGTERM the main process of the worker running a long windowed job past its
            third window, a second warm worker idle, both --slots 8: SIGTERM -> first token
            of the new epoch (target: median <= 0.5 s), tokens recomputed, the old worker's
            exit status, streamed text = result = the job uninterrupted beside 7 others.
  memory    RSS of the relay, a reader process and the worker over a 100,000-token job
            (target: relay and reader flat within 10 MB).
  submit    a 10,000-line batch queued with Client.submit_batch() by a producer process, no
            worker; baseline: Client.submit() calls. Targets: >= 2,000 jobs/s; RSS <= 150 MB.
  overhead  200 jobs of 16 tokens as one batch on 2 worker processes against the same jobs
            run back to back by 2 llama-cpp-python processes, 3 rounds. Target: median
            in-process wall / genq wall >= 0.90.
  remote    genq's remote backend against streaming the same llama_cpp.server directly: one
            job at a time, then 16 at once (--slots 16). Target: genq / direct tok/s >= 0.90.
  slots     8 jobs at once on one --slots 8 worker against llama-cpp-python's batched decode
            (genq's invariant settings, llama.cpp's defaults, Llama's defaults, a bare
            argmax loop) and llama-server -np 8 when built; then 8 one-slot processes.
  gateway   one job streamed with the openai SDK through `genq serve` against genq's client,
            and against llama_cpp.server and llama-server; then 64 SSE clients at once.
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ops.bench",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--suite",
        type=_suites,
        default=list(SECTIONS),
        help="comma-separated sections to run (default: all): " + ",".join(SECTIONS),
    )
    parser.add_argument(
        "--omp-spin",
        action="store_true",
        help="leave OpenMP's idle threads spinning (its default) in every process of the run "
        "instead of OMP_WAIT_POLICY=passive (the default here, unless the variable is set): "
        "on a machine with no core to spare, a spinning thread waits for a peer that is not "
        "running, and jobs take many times longer, by amounts that vary from run to run",
    )
    parser.add_argument(
        "--model",
        default=default_model(),
        help="registry model of the stream, recovery, handoff, overhead and gateway sections "
        "(default here: "
        f"{default_model()}; gemma-3-270m when its package is installed, else {TINY})",
    )
    _stream_options(parser.add_argument_group("stream"))
    _relay_options(parser.add_argument_group("relay"))
    _recovery_options(parser.add_argument_group("recovery"))
    _handoff_options(parser.add_argument_group("handoff"))
    _memory_options(parser.add_argument_group("memory"))
    _submit_options(parser.add_argument_group("submit"))
    _overhead_options(parser.add_argument_group("overhead"))
    _remote_options(parser.add_argument_group("remote"))
    _slots_options(parser.add_argument_group("slots"))
    _gateway_options(parser.add_argument_group("gateway"))
    return parser.parse_args(argv)


def _gateway_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--gateway-jobs", type=_positive, default=10, help="measured jobs per path (10)")
    add("--gateway-clients", type=_positive, default=64, help="SSE clients at once (64)")


def _slots_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--slots-jobs", type=_positive, default=8, help="jobs at once, and the worker's slots (8)")
    add("--slots-tokens", type=_positive, help="tokens per job (128 on a real model, 512 on tiny)")
    add("--slots-rounds", type=_positive, default=3, help="rounds of every path, in turn (3)")


def _stream_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--jobs", type=_positive, default=30, help="measured jobs, in-process and genq (30)")
    add("--warmup", type=_natural, default=3, help="unmeasured jobs first, per path (3)")
    add("--server-jobs", type=_positive, default=1, help="measured llama_cpp.server jobs (1)")
    add("--no-server", action="store_true", help="skip llama-cpp-python's server")
    add(
        "--max-tokens",
        type=_positive,
        help="job size asked for (2000 on tiny, 128 on a real model)",
    )
    add("--prompt", default=DEFAULT_PROMPT, help=f"prompt ({DEFAULT_PROMPT!r})")
    add("--seed", type=_natural, default=DEFAULT_SEED, help=f"sampler seed ({DEFAULT_SEED})")
    add(
        "--allow-stray-bytes",
        dest="utf8_only",
        action="store_false",
        help="do not ban the tiny model's byte tokens that are not valid UTF-8 alone (banned by "
        "default on every path: with them llama_cpp.server holds back and re-decodes its whole "
        "stream, quadratically, and a 2000-token job takes many minutes)",
    )
    add("--chunk-tokens", type=_positive, help="worker's GENQ_CHUNK_TOKENS (default: settings)")
    add("--chunk-interval-ms", type=_milliseconds, help="worker's GENQ_CHUNK_INTERVAL_MS")


def _relay_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add(
        "--relay-seconds",
        type=_seconds,
        default=12.0,
        help="load per relay, in two turns alternating with the other phases; the first "
        "second of each turn is warm-up (12)",
    )
    add("--relay-baseline-seconds", type=_seconds, default=6.0, help="load per baseline (6)")
    add("--relay-jobs", type=_positive, default=50, help="concurrent job ids published (50)")


def _recovery_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--recovery-runs", type=_positive, default=10, help="killed jobs per lease TTL (10)")
    add("--lease-ttls", type=_ttls, default=[2.0, 5.0], help="GENQ_LEASE_TTL_S values (2,5)")
    add("--recovery-tokens", type=_positive, help="job size (4000 on tiny, 240 otherwise)")
    add("--recovery-window", type=_positive, help="window_tokens (100 on tiny, 40 otherwise)")


def _handoff_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--handoff-runs", type=_positive, default=5, help="signalled jobs (5)")
    add("--handoff-slots", type=_positive, default=8, help="each worker's GENQ_SLOTS (8)")
    add("--handoff-tokens", type=_positive, help="job size (20000 on tiny, 400 otherwise)")
    add("--handoff-window", type=_positive, help="window_tokens (100 on tiny, 40 otherwise)")


def _memory_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--memory-tokens", type=_positive, default=100_000, help="job size (100000)")
    add("--memory-window", type=_positive, default=128, help="window_tokens (128)")
    add("--memory-interval-s", type=_seconds, default=0.5, help="RSS sampling period (0.5)")


def _submit_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--submit-jobs", type=_positive, default=10_000, help="batch lines (10000)")
    add(
        "--submit-single-jobs",
        type=_positive,
        default=1_000,
        help="Client.submit() calls for the baseline (1000)",
    )


def _overhead_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--overhead-jobs", type=_positive, default=overhead.JOBS, help=f"jobs ({overhead.JOBS})")
    add("--overhead-tokens", type=_positive, default=16, help="tokens per job (16)")
    add("--overhead-rounds", type=_positive, default=3, help="rounds of both sides (3)")
    add(
        "--overhead-processes",
        type=_positive,
        default=overhead.PROCESSES,
        help=f"worker processes, and in-process ones ({overhead.PROCESSES}, the target's); "
        "fewer than the cores leaves Redis, the relay and Celery's main processes a core",
    )


def _remote_options(group: argparse._ArgumentGroup) -> None:
    add = group.add_argument
    add("--remote-jobs", type=_positive, default=5, help="jobs per path per round (5)")
    add("--remote-tokens", type=_positive, default=200, help="tokens per job (200)")
    add("--remote-rounds", type=_positive, default=20, help="rounds of both paths (20)")
    add(
        "--remote-concurrent-jobs",
        type=_positive,
        default=16,
        help="jobs at once per path, and the worker's --slots, in the concurrent part (16)",
    )
    add(
        "--remote-concurrent-rounds",
        type=_positive,
        default=5,
        help="rounds of both concurrent bursts (5)",
    )


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


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value


def _natural(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text}")
    return value


def _milliseconds(text: str) -> float:
    value = float(text)
    if not 0 <= value <= MAX_INTERVAL_MS:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAX_INTERVAL_MS:.0f}: {text}")
    return value


def _positive(text: str) -> int:
    value = _natural(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything the benchmark started is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (
        StackError,
        GenqError,
        paths.BenchJobFailed,
        recovery.RecoveryFailed,
        handoff.HandoffFailed,
    ) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> None:
    say(report.machine(), report.versions())
    _prepare_model(args.model)
    started = time.monotonic()
    with cache_dir() as cache:
        for name in args.suite:
            title, section = SECTIONS[name]
            say("", f"== {title}")
            began = time.monotonic()
            section(args, cache)
            say(f"({name}: {time.monotonic() - began:.0f} s)")
    say("", f"benchmark: {time.monotonic() - started:.0f} s in all")


def _prepare_model(model: str) -> None:
    """Refuse an unknown or remote model before anything starts, and write a model file made
    on first use (the tiny model, gemma-3-270m's assembled GGUF) before the workers race to."""
    registry = ModelRegistry.from_settings(Settings())
    config = registry.llama(model)
    began = time.monotonic()
    path = registry.local_path(model)
    say(
        f"model: {model} ({path}, {path.stat().st_size / 1e6:,.0f} MB, n_ctx {config.n_ctx}, "
        f"n_threads {config.n_threads or 'all'}; ready in {time.monotonic() - began:.1f} s)"
    )
