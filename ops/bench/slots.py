"""The slots section: continuous batching on --model, each path once a round in turn. The
in-process baselines run in processes of their own (ops/bench/py); llama-server where
`make llama-server` built it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import llama_cpp as lc
import numpy as np
import psutil

from genq import Client, JobSpec
from genq.common.registry import LlamaModelConfig
from ops.bench import paths
from ops.bench.report import BENCH_MODEL, TINY, Batch, Run, job_model, mb, met, say, table
from ops.bench.stack import Stack, local_stack, pid, print_tail, serving
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
GENQ, PEER = "genq", "llama-server"
LLAMAFILE = {
    False: "compiled out of this llama-cpp-python (-DGGML_LLAMAFILE=OFF)",
    True: "COMPILED INTO this llama-cpp-python (batched jobs are not invariant)",
}
Rounds = dict[str, list[Batch]]  # each path's batches, a round each
Before = Callable[[], None] | None  # what runs before each of genq's batches


RUN_TIMEOUT_S = 900.0
DECODE_WARM_TOKENS = 4
TILED_MM = "GGML_CPU_TILED_MM"  # ggml's tiled K-quant product; 0: off (read once)
Pick = Callable[[int], int]  # a batch index -> the token picked from its logits


@dataclass(frozen=True)
class Variant:
    label: str
    flash_attn: int
    repack: bool  # use_extra_bufts
    tiled: bool  # ggml's tiled K-quant product (GGML_CPU_TILED_MM unset)
    chain: bool  # the jobs' sampler chain; else argmax


AUTO, OFF = lc.LLAMA_FLASH_ATTN_TYPE_AUTO, lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
# llama.cpp's defaults were genq's engine before batch invariance; Llama's turn flash attention
# off; genq's invariant settings also keep the weights as stored and the tiled product off.
VARIANTS = {
    "limit": Variant("bare llama_decode + argmax, llama.cpp defaults", AUTO, True, True, False),
    "llama.cpp": Variant("in-process, llama.cpp defaults (pre-invariance)", AUTO, True, True, True),
    "llama-cpp-python": Variant("in-process, llama-cpp-python defaults", OFF, True, True, True),
    "invariant": Variant("in-process, genq's invariant settings", OFF, False, False, True),
}


@dataclass(frozen=True)
class Spec:
    """What one run decodes; `sampling`: temperature, top_k, top_p, min_p, seed (the first
    sequence's; sequence n's is seed + n)."""

    variant: str
    model: str
    n_gpu_layers: int
    n_ctx: int
    n_batch: int
    n_threads: int
    prompt: list[int]
    n_seq: int
    tokens: int
    sampling: dict[str, float]


@dataclass(frozen=True)
class Decoded(Batch):
    """An in-process variant's run, from the prompts' batch on: a Run per sequence, and where
    the time went (`steps`: the decodes after the prompts')."""

    steps: int = 0
    decode_s: float = 0.0
    pick_s: float = 0.0


def _median(batches: list[Batch]) -> Batch:
    """The batch of median tok/s (the lower of the middle two)."""
    return sorted(batches, key=lambda batch: batch.tokens_per_s)[(len(batches) - 1) // 2]


def section(args: argparse.Namespace, cache: Path) -> None:
    """8 jobs at once on one --slots 8 worker against llama-cpp-python's batched decode
    (genq's invariant settings, llama.cpp's defaults, Llama's defaults, a bare argmax loop)
    and llama-server -np 8 when built; then 8 one-slot processes."""
    n, name, k = args.slots_jobs, job_model(args.model), args.slots_rounds
    tokens = args.slots_tokens or (512 if args.model == TINY else 128)
    job = JobSpec(model=name, prompt=args.prompt, max_tokens=tokens, window_tokens=tokens)
    jobs = [job.model_copy(update={"seed": args.seed + i, "ignore_eos": True}) for i in range(n)]
    with local_stack(cache, {"GENQ_SLOTS": str(n)}, workers=0) as stack:
        path, config = stack.model(name)
        say(
            f"model {name!r}: {n} jobs of {tokens} tokens after the prompt {args.prompt!r}, EOS "
            f"banned; {config.n_threads or 'all'} threads, n_batch {config.n_batch}; {k} rounds, "
            f"each path once a round in turn",
            f"llamafile's sgemm: {LLAMAFILE[b'LLAMAFILE = 1' in lc.llama_print_system_info()]}; "
            "no setting switches it at run time, so every in-process variant runs without it; "
            "llama-server is built with llama.cpp's defaults (llamafile on)",
        )
        rounds: Rounds = {}
        spec = _spec(args.prompt, config, path, jobs)
        before = functools.partial(_baselines, stack, rounds, spec, config, jobs)
        lone_slots, rounds[GENQ], slots_memory = _genq(stack, f"--slots {n}", jobs, [], k, before)
        args_one = ["--slots", "1", "-c", str(n)]
        lone_one, one, one_memory = _genq(stack, f"-c {n} (one slot each)", jobs, args_one, k)
    _summary(rounds, one[0], tokens)
    first = _median(rounds[GENQ]).first_token_ms
    ratio, lone = first / lone_slots.first_token_ms, lone_slots.tokens_per_s / lone_one.tokens_per_s
    say(
        f"first token, median of {n} jobs submitted at once / a lone job's: {ratio:.2f} "
        f"({first:.0f} vs {lone_slots.first_token_ms:.0f} ms; target <= "
        f"{TARGET_FIRST_TOKEN}: {met(ratio <= TARGET_FIRST_TOKEN)})",
        f"lone job tok/s, --slots {n} / one slot: {lone:.2f} ({lone_slots.tokens_per_s:.1f} vs "
        f"{lone_one.tokens_per_s:.1f}; target >= {TARGET_LONE}: {met(lone >= TARGET_LONE)})",
        f"memory, one worker with --slots {n}: {slots_memory}; {n} one-slot: {one_memory}",
    )


def _spec(prompt: str, config: LlamaModelConfig, path: Path, jobs: list[JobSpec]) -> Spec:
    """What the in-process variants decode: the jobs' prompt, count, size and sampling."""
    with paths.loaded(path) as vocab:
        tokens = paths.prompt_tokens(vocab, prompt)
    first = jobs[0]
    return Spec(
        "", str(path), config.n_gpu_layers, config.n_ctx, config.n_batch,
        config.n_threads or os.cpu_count() or 1, tokens, len(jobs), first.max_tokens,
        {**first.model_dump(include=paths.SAMPLING), "seed": first.seed or 0},
    )  # fmt: skip


def _baselines(
    stack: Stack, rounds: Rounds, spec: Spec, config: LlamaModelConfig, jobs: list[JobSpec]
) -> None:
    """One round of the in-process variants and the peer, between genq's batches."""
    for key, variant in VARIANTS.items():
        rounds.setdefault(key, []).append(decoded(replace(spec, variant=key), variant.label))
    peer = _llama_server(stack.cache, Path(spec.model), config, jobs)
    if peer is not None:
        rounds.setdefault(PEER, []).append(peer)


def _genq(
    stack: Stack, label: str, jobs: list[JobSpec], args: list[str], lone: int, before: Before = None
) -> tuple[Batch, list[Batch], str]:
    """A warm-up, `lone` jobs alone (the median's), then the jobs at once: with `before` (a
    call) each time, `lone` rounds, else one. The lone job, the batches, the memory."""
    worker = Worker(env=stack.env, log=stack.cache / "worker-slots.log", args=tuple(args))
    with serving(worker), Client(stack.settings) as client:
        _submit_all(client, jobs)  # warm-up: every process loads the model
        alone = _median([_submit_all(client, jobs[:1]) for _ in range(lone)])
        batches = []
        for _ in range(lone if before else 1):
            if before:
                before()
            batches.append(_submit_all(client, jobs, f"genq {label}"))
        root = psutil.Process(pid(worker))  # Celery's main process and its pool
        infos = [p.memory_full_info() for p in [root, *root.children(recursive=True)]]
        memory = f"RSS {mb(sum(i.rss for i in infos))}, PSS {mb(sum(i.pss for i in infos))}"
    batch = _median(batches)
    say(
        f"genq, {label}: lone job {alone.tokens_per_s:,.1f} tok/s, first token "
        f"{alone.first_token_ms:.0f} ms; {len(jobs)} at once {batch.tokens_per_s:,.1f} tok/s "
        f"aggregate (median round), first token median {batch.first_token_ms:.0f} ms"
    )
    return alone, batches, memory


def _loop(rounds: Rounds, key: str) -> Decoded:
    median = _median(rounds[key])
    assert isinstance(median, Decoded)  # the in-process variants' rounds
    return median


def _submit_all(client: Client, jobs: list[JobSpec], name: str = GENQ) -> Batch:
    started = time.perf_counter()
    results = [h.result(timeout=JOB_TIMEOUT_S) for h in [client.submit(s) for s in jobs]]
    ms = [(r.usage.completion_tokens, r.timings.first_token_ms / 1000) for r in results]
    return Batch(name, [Run(n, first, 0.0) for n, first in ms], time.perf_counter() - started)


def _llama_server(
    cache: Path, path: Path, config: LlamaModelConfig, jobs: list[JobSpec]
) -> Batch | None:
    """llama.cpp's own server with a slot per job and a streaming client per slot, asked
    for what genq's jobs were (prompt, seeds, sampling, tokens)."""
    binary = find()
    if binary is None or jobs[0].model == BENCH_MODEL:
        why = "the tiny model (--model)" if binary else "not built (make llama-server)"
        say(f"skipped llama-server: {why}")
        return None
    log = cache / "llama-server-slots.log"
    server = LlamaCppServer(path, config, log, binary=binary, parallel=len(jobs))
    try:
        with serving(server):
            paths.stream_sse(server.port, paths.request_body(jobs[0], None, WARM_TOKENS))
            bodies = [paths.request_body(job, None) for job in jobs]
            batch = paths.server_batch(f"llama-server -np {len(jobs)}", server.port, bodies)
    except (StackError, paths.ServerError, OSError) as exc:
        print_tail(log)
        say(f"skipped llama-server: {exc}")
        return None
    say(f"{server.command_line()}: {batch.tokens_per_s:,.1f} tok/s aggregate")
    return batch


def _summary(rounds: Rounds, one: Batch, tokens: int) -> None:
    genq, rows = _median(rounds[GENQ]), []
    for key, batches in [*rounds.items(), ("one", [one])]:
        b, goal = _median(batches), TARGETS.get(key)
        ratio = genq.tokens_per_s / b.tokens_per_s
        versus = f"{ratio:.2f}" + (f" (target >= {goal}: {met(ratio >= goal)})" if goal else "")
        each = " ".join(f"{x.tokens_per_s:.1f}" for x in batches)
        rows.append([b.name, f"{b.tokens_per_s:.1f}", f"{b.first_token_ms:.0f}", each, versus])
    header = ("path", "tok/s", "first token ms", "each round", "genq / path")
    settings = _median(rounds["invariant"]).tokens_per_s / _median(rounds["llama.cpp"]).tokens_per_s
    say(
        "",
        table(header, rows),
        "",
        f"engine settings: genq's invariant / llama.cpp's defaults, the same in-process loop: "
        f"{settings:.2f} (target >= {TARGET_SETTINGS}: {met(settings >= TARGET_SETTINGS)})",
    )
    # Where a step's time goes, from the bare loop to genq (a step: a token of every job).
    limit, inv = _loop(rounds, "limit"), _loop(rounds, "invariant")
    step = {key: _median(batches).wall_s * 1000 / tokens for key, batches in rounds.items()}
    base, flash_off = _loop(rounds, "llama.cpp"), _loop(rounds, "llama-cpp-python")
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


def decoded(spec: Spec, label: str) -> Decoded:
    """`spec` decoded in a process of its own."""
    env = {k: v for k, v in os.environ.items() if k != TILED_MM}
    if not VARIANTS[spec.variant].tiled:
        env[TILED_MM] = "0"
    command = [sys.executable, "-m", __name__, json.dumps(asdict(spec))]
    out = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    if out.returncode != 0:
        raise StackError(f"{spec.variant} run failed ({out.returncode}): {out.stderr[-2000:]}")
    tokens, first_s, wall_s, *parts = json.loads(out.stdout.splitlines()[-1])
    return Decoded(label, [Run(tokens, first_s, 0.0)] * spec.n_seq, wall_s, *parts)


def measure(spec: Spec) -> tuple[int, float, float, int, float, float]:
    variant = VARIANTS[spec.variant]
    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.n_gpu_layers, params.use_extra_bufts = spec.n_gpu_layers, variant.repack
    model = lc.llama_model_load_from_file(spec.model.encode(), params)
    if not model:
        raise StackError(f"cannot load {spec.model}")
    ctx = lc.llama_init_from_model(model, _context_params(spec, variant.flash_attn))
    batch = lc.llama_batch_init(spec.n_batch, 0, 1)
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    chains = [_chain(model, spec.sampling, n) for n in range(spec.n_seq)] if variant.chain else []
    picks = [_sample(ctx, c) for c in chains] or [_argmax(ctx, n_vocab)] * spec.n_seq
    try:
        _decode_loop(ctx, batch, spec, picks, DECODE_WARM_TOKENS)
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        return _decode_loop(ctx, batch, spec, picks, spec.tokens)
    finally:
        for chain in chains:
            lc.llama_sampler_free(chain)
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)


def _context_params(spec: Spec, flash_attn: int) -> lc.llama_context_params:
    params: lc.llama_context_params = lc.llama_context_default_params()
    params.n_ctx, params.n_seq_max = spec.n_ctx * spec.n_seq, spec.n_seq
    params.n_batch = params.n_ubatch = spec.n_batch
    params.n_threads = params.n_threads_batch = spec.n_threads
    params.kv_unified, params.flash_attn_type, params.no_perf = False, flash_attn, True
    return params


def _chain(model: lc.llama_model_p, sampling: dict[str, float], n: int) -> lc.llama_sampler_p:
    vocab = lc.llama_model_get_vocab(model)
    chain: lc.llama_sampler_p = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    ban = (lc.llama_logit_bias * 1)(lc.llama_logit_bias(lc.llama_vocab_eos(vocab), -np.inf))
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    for sampler in (
        lc.llama_sampler_init_logit_bias(n_vocab, 1, ban),
        lc.llama_sampler_init_top_k(int(sampling["top_k"])),
        lc.llama_sampler_init_top_p(sampling["top_p"], 1),
        lc.llama_sampler_init_min_p(sampling["min_p"], 1),
        lc.llama_sampler_init_temp(sampling["temperature"]),
        lc.llama_sampler_init_dist(int(sampling["seed"]) + n),
    ):
        lc.llama_sampler_chain_add(chain, sampler)
    return chain


def _sample(ctx: lc.llama_context_p, chain: lc.llama_sampler_p) -> Pick:
    return lambda index: int(lc.llama_sampler_sample(chain, ctx, index))


def _argmax(ctx: lc.llama_context_p, n_vocab: int) -> Pick:
    """The row's largest logit, read in place (no copy)."""
    return lambda index: int(
        np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, index), (n_vocab,)).argmax()
    )


def _decode_loop(
    ctx: lc.llama_context_p, batch: lc.llama_batch, spec: Spec, picks: Sequence[Pick], tokens: int
) -> tuple[int, float, float, int, float, float]:
    """Tokens per sequence, first-token and wall seconds, steps, decode and pick seconds."""
    started = time.perf_counter()
    n = len(spec.prompt)
    if n * spec.n_seq > spec.n_batch:
        raise StackError(f"{spec.n_seq} prompts of {n} tokens exceed n_batch {spec.n_batch}")
    rows = [[_add(batch, t, p, seq, p == n - 1) for p, t in enumerate(spec.prompt)][-1]
            for seq in range(spec.n_seq)]  # fmt: skip
    _decode(ctx, batch)
    first = decode = pick = 0.0
    for step in range(tokens):
        a = time.perf_counter()
        picked = [p(row) for p, row in zip(picks, rows, strict=True)]
        b = time.perf_counter()
        first, pick = first or b - started, pick + b - a
        if step == tokens - 1:
            break
        rows = [_add(batch, token, n + step, seq, True) for seq, token in enumerate(picked)]
        c = time.perf_counter()
        _decode(ctx, batch)
        decode += time.perf_counter() - c
    wall = time.perf_counter() - started
    return tokens, first, wall, tokens - 1, decode, pick


def _add(batch: lc.llama_batch, token: int, pos: int, seq: int, output: bool) -> int:
    i = batch.n_tokens
    batch.token[i] = token
    batch.pos[i] = pos  # type: ignore[call-overload]  # the stub types pos as arrays
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = int(output)
    batch.n_tokens = i + 1
    return int(i)


def _decode(ctx: lc.llama_context_p, batch: lc.llama_batch) -> None:
    status = lc.llama_decode(ctx, batch)
    batch.n_tokens = 0
    if status != 0:
        raise StackError(f"llama_decode failed with status {status}")


if __name__ == "__main__":
    print(json.dumps(measure(Spec(**json.loads(sys.argv[1])))), flush=True)
