"""The slots section: continuous batching on --model, in --slots-rounds rounds, each path once
a round in turn. The in-process baselines run in processes of their own (ops/bench/batched.py);
llama-server where `make llama-server` built it. Also a lone job with the slots against one
slot, each worker's memory (RSS, and PSS, which counts the model's shared pages once), and
where a step's time goes from the bare loop to genq.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import llama_cpp as lc

from genq import Client, JobSpec
from genq.common.registry import LlamaModelConfig
from ops.bench import batched, paths
from ops.bench.report import BENCH_MODEL, TINY, Batch, Run, job_model, mb, met, say
from ops.bench.stack import Stack, local_stack, print_tail, processes, serving
from ops.llamaserver import LlamaCppServer
from ops.llamaserver_build import find
from ops.localstack import StackError, Worker

# genq's aggregate tok/s over each baseline's, at least (TARGETS), and the invariant loop's
# over llama.cpp's defaults (the cost of the invariant settings).
TARGETS = {"llama-cpp-python": 0.90, "llama-server": 1.0, "limit": 0.85}
TARGET_SETTINGS = 0.95
TARGET_FIRST_TOKEN = 2.0  # median first token of the batch, at most this many lone ones
TARGET_LONE = 0.95  # a lone job with slots over one slot, at least
JOB_TIMEOUT_S = 600.0
WARM_TOKENS = 8  # one short request to the peer first: its first request's one-off costs
SAMPLING = {"temperature", "top_p", "top_k", "min_p", "repeat_penalty"}
GENQ = "genq"
PEER = "llama-server"


@dataclass
class Rounds:
    """Each path's batches, a round each, and the in-process loops' timings."""

    batches: dict[str, list[Batch]] = field(default_factory=dict)
    loops: dict[str, list[batched.Loop]] = field(default_factory=dict)

    def add(self, key: str, batch: Batch) -> None:
        self.batches.setdefault(key, []).append(batch)

    def median(self, key: str) -> Batch:
        """The round of median tok/s (the lower of the middle two)."""
        return _median(self.batches[key])

    def loop(self, key: str) -> batched.Loop:
        return self.loops[key][self.batches[key].index(self.median(key))]


def _median(batches: list[Batch]) -> Batch:
    """The batch of median tok/s (the lower of the middle two)."""
    ranked = sorted(batches, key=lambda batch: batch.tokens_per_s)
    return ranked[(len(ranked) - 1) // 2]


def section(args: argparse.Namespace, cache: Path) -> None:
    """8 jobs at once on one --slots 8 worker against llama-cpp-python's batched decode
    (genq's invariant settings, llama.cpp's defaults, Llama's defaults, a bare argmax loop)
    and llama-server -np 8 when built; then 8 one-slot processes."""
    n, name = args.slots_jobs, job_model(args.model)
    tokens = args.slots_tokens or (512 if args.model == TINY else 128)
    job = JobSpec(model=name, prompt=args.prompt, max_tokens=tokens, window_tokens=tokens)
    jobs = [job.model_copy(update={"seed": args.seed + i, "ignore_eos": True}) for i in range(n)]
    with local_stack(cache, {"GENQ_SLOTS": str(n)}, workers=0) as stack:
        path, config = stack.model(name)
        say(
            f"model {name!r}: {n} jobs of {jobs[0].max_tokens} tokens after the prompt "
            f"{args.prompt!r}, EOS banned; {config.n_threads or 'all'} threads, n_batch "
            f"{config.n_batch}; {args.slots_rounds} rounds, each path once a round in turn",
            f"llamafile's sgemm: {_llamafile()}",
        )
        rounds = Rounds()
        measure_round = _baselines(stack, args, rounds, name, config, path, jobs)
        k = args.slots_rounds
        lone_slots, slots_memory = _genq(stack, rounds, f"--slots {n}", jobs, [], k, measure_round)
        one = Rounds()
        args_one = ["--slots", "1", "-c", str(n)]
        lone_one, one_memory = _genq(stack, one, f"-c {n} (one slot each)", jobs, args_one, k)
    _summary(n, rounds, one.batches[GENQ][0])
    _breakdown(rounds, jobs[0].max_tokens)
    _lone(n, rounds.median(GENQ), lone_slots, lone_one)
    say(f"memory, one worker with --slots {n}: {slots_memory}; {n} one-slot: {one_memory}")


def _llamafile() -> str:
    build = "compiled out of this llama-cpp-python (-DGGML_LLAMAFILE=OFF)"
    if b"LLAMAFILE = 1" in bytes(lc.llama_print_system_info()):
        build = "COMPILED INTO this llama-cpp-python (batched jobs are not invariant)"
    return (
        f"{build}; no setting switches it at run time, so every in-process variant runs "
        "without it; llama-server is built with llama.cpp's defaults (llamafile on)"
    )


def _baselines(
    stack: Stack,
    args: argparse.Namespace,
    rounds: Rounds,
    name: str,
    config: LlamaModelConfig,
    path: Path,
    jobs: list[JobSpec],
) -> Callable[[], None]:
    """One round of the in-process variants and the peer, between genq's batches."""
    with paths.loaded(path) as vocab:
        prompt = vocab.tokenize(args.prompt.encode(), add_bos=True, special=True)
    first = jobs[0]
    spec = batched.Spec(
        "", str(path), config.n_gpu_layers, config.n_ctx, config.n_batch,
        config.n_threads or os.cpu_count() or 1, prompt, len(jobs), first.max_tokens,
        {**first.model_dump(include=SAMPLING), "seed": first.seed or 0},
    )  # fmt: skip

    def measure_round() -> None:
        for key, variant in batched.VARIANTS.items():
            loop = batched.run(replace(spec, variant=key))
            rounds.loops.setdefault(key, []).append(loop)
            runs = [Run(loop.tokens // len(jobs), loop.first_token_s, 0.0)] * len(jobs)
            rounds.add(key, Batch(variant.label, runs, loop.wall_s))
        peer = _llama_server(stack.cache, name, config, path, jobs)
        if peer is not None:
            rounds.add(PEER, peer)

    return measure_round


def _genq(
    stack: Stack,
    rounds: Rounds,
    label: str,
    jobs: list[JobSpec],
    args: list[str],
    lone: int,
    before: Callable[[], None] | None = None,
) -> tuple[Batch, str]:
    """A warm-up, `lone` jobs alone (the median's), then the jobs at once: with `before` each
    time, `lone` rounds, else one."""
    log = stack.cache / "worker-slots.log"
    worker = Worker(env=stack.env, log=log, args=tuple(args))
    with serving(worker), Client(stack.settings) as client:
        _submit_all(client, jobs)  # warm-up: every process loads the model
        alone = _median([_submit_all(client, jobs[:1]) for _ in range(lone)])
        for _ in range(lone if before else 1):
            if before:
                before()
            rounds.add(GENQ, _submit_all(client, jobs, f"genq {label}"))
        infos = [p.memory_full_info() for p in processes(stack.pid(worker))]
        memory = f"RSS {mb(sum(i.rss for i in infos))}, PSS {mb(sum(i.pss for i in infos))}"
    batch = rounds.median(GENQ)
    say(
        f"genq, {label}: lone job {alone.tokens_per_s:,.1f} tok/s, first token "
        f"{alone.first_token_ms:.0f} ms; {len(jobs)} at once {batch.tokens_per_s:,.1f} tok/s "
        f"aggregate (median round), first token median {batch.first_token_ms:.0f} ms"
    )
    return alone, memory


def _submit_all(client: Client, jobs: list[JobSpec], name: str = GENQ) -> Batch:
    started = time.perf_counter()
    results = [h.result(timeout=JOB_TIMEOUT_S) for h in [client.submit(s) for s in jobs]]
    ms = [(r.usage.completion_tokens, r.timings.first_token_ms / 1000) for r in results]
    return Batch(name, [Run(n, first, 0.0) for n, first in ms], time.perf_counter() - started)


def _llama_server(
    cache: Path, name: str, config: LlamaModelConfig, path: Path, jobs: list[JobSpec]
) -> Batch | None:
    """llama.cpp's own server with a slot per job and a streaming client per slot, asked
    for what genq's jobs were (prompt, seeds, sampling, tokens)."""
    binary = find()
    if binary is None or name == BENCH_MODEL:
        why = "the tiny model (--model)" if binary else "not built (make llama-server)"
        say(f"skipped llama-server: {why}")
        return None
    log = cache / "llama-server-slots.log"
    server = LlamaCppServer(path, config, log, binary=binary, parallel=len(jobs))
    try:
        with serving(server):
            paths.stream_sse(server.port, paths.request_body(jobs[0], None, WARM_TOKENS))
            bodies = [paths.request_body(spec, None) for spec in jobs]
            batch = paths.server_batch(f"llama-server -np {len(jobs)}", server.port, bodies)
    except (StackError, paths.ServerError, OSError) as exc:
        print_tail(log)
        say(f"skipped llama-server: {exc}")
        return None
    say(f"{server.command_line()}: {batch.tokens_per_s:,.1f} tok/s aggregate")
    return batch


def _summary(n: int, rounds: Rounds, one: Batch) -> None:
    genq = rounds.median(GENQ)
    rows = [(key, rounds.median(key)) for key in rounds.batches] + [("one", one)]
    width = max(len(b.name) for _, b in rows)
    say("", f"{'path':<{width}}  tok/s  first token ms  each round        genq / path")
    for key, b in rows:
        ratio = genq.tokens_per_s / b.tokens_per_s
        goal = TARGETS.get(key)
        versus = f"{ratio:.2f}" + (f" (target >= {goal}: {met(ratio >= goal)})" if goal else "")
        each = " ".join(f"{x.tokens_per_s:.1f}" for x in rounds.batches.get(key, [b]))
        figures = f"{b.tokens_per_s:5.1f}  {b.first_token_ms:14.0f}  {each:<16}"
        say(f"{b.name:<{width}}  {figures}  {versus}")
    settings = rounds.median("invariant").tokens_per_s / rounds.median("llama.cpp").tokens_per_s
    say(
        "",
        f"engine settings: genq's invariant / llama.cpp's defaults, the same in-process loop: "
        f"{settings:.2f} (target >= {TARGET_SETTINGS}: {met(settings >= TARGET_SETTINGS)})",
    )


def _breakdown(rounds: Rounds, tokens: int) -> None:
    """Where a step's time goes, from the bare loop to genq (a step: a token of every job)."""
    limit, inv = rounds.loop("limit"), rounds.loop("invariant")
    step = {key: rounds.median(key).wall_s * 1000 / tokens for key in rounds.batches}
    base, flash_off = rounds.loop("llama.cpp"), rounds.loop("llama-cpp-python")
    costs = {
        "the sampler chain instead of an argmax": base.pick_s - limit.pick_s,
        "flash attention off (llama-cpp-python's default too)": flash_off.decode_s - base.decode_s,
        "weights not repacked, no tiled K-quant product": inv.decode_s - flash_off.decode_s,
    }
    lines = [f"  {v * 1000 / limit.steps:+7.1f}  {k}" for k, v in costs.items()]
    rest = step["invariant"] - step["limit"] - sum(costs.values()) * 1000 / limit.steps
    say(
        "where a step goes, from the bare loop to genq (ms):",
        f"  {step['limit']:7.1f}  the bare loop (llama.cpp's defaults, an argmax)",
        *lines,
        f"  {rest:+7.1f}  the rest (batch building, the prompts, noise)",
        f"  {step['invariant']:7.1f}  the in-process loop with genq's settings and chain",
        f"  {step[GENQ] - step['invariant']:+7.1f}  genq's worker around the same decode (job "
        "threads, text, chunks, Redis and the relay on the same cores)",
        f"  {step[GENQ]:7.1f}  genq --slots {limit.tokens // tokens}",
    )


def _lone(n: int, slots: Batch, lone_slots: Batch, lone_one: Batch) -> None:
    first = slots.first_token_ms / lone_slots.first_token_ms
    say(
        f"first token, median of {n} jobs submitted at once / a lone job's: {first:.2f} "
        f"({slots.first_token_ms:.0f} vs {lone_slots.first_token_ms:.0f} ms; target <= "
        f"{TARGET_FIRST_TOKEN}: {met(first <= TARGET_FIRST_TOKEN)})"
    )
    lone = lone_slots.tokens_per_s / lone_one.tokens_per_s
    say(
        f"lone job tok/s, --slots {n} / one slot: {lone:.2f} ({lone_slots.tokens_per_s:.1f} vs "
        f"{lone_one.tokens_per_s:.1f}; target >= {TARGET_LONE}: {met(lone >= TARGET_LONE)})"
    )
