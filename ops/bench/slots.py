"""The slots section: continuous batching on --model. `--slots-jobs` jobs (8) submitted at
once to one worker process with that many slots, against:
- in-process batched llama.cpp: the same sequences in one context of this process, one
  `llama_decode` per step for all of them, sampled by llama.cpp's sampler chain (genq's thin
  wrappers workers.decoder and workers.sampling, with no queue, threads or text around them);
- llama.cpp's own `llama-server -np N` with N concurrent streaming clients, when its binary is
  found (ops/bench/llama_server_bin.py; `make llama-server` builds it);
- eight one-slot worker processes (`-c 8`, the way to run eight jobs at once before slots).
Also a lone job's tok/s with the slots against one slot, the median first token of the jobs
submitted together against a lone job's, and each worker's memory (RSS and PSS, which counts
the model's shared pages once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from common.registry import LlamaModelConfig, ModelRegistry
from common.schemas import JobResult, JobSpec
from ops.bench import llama_server_bin
from ops.bench.llama_server_peer import LlamaCppServer, PeerJob, run_peer, sampling
from ops.bench.openai_server import ServerError
from ops.bench.report import met, say
from ops.bench.stack import Stack, local_stack, print_tail
from ops.bench.workload import BENCH_MODEL, TINY, job_model
from ops.localstack import StackError, Worker
from producer.client import Client
from workers.backends.llama import LlamaBackend
from workers.decoder import Decoder
from workers.sampling import Sampler

TARGET_VS_INPROCESS = 0.90
TARGET_VS_LLAMA_SERVER = 1.0
TARGET_FIRST_TOKEN = 2.0  # median first token of the batch, at most this many lone ones
TARGET_LONE = 0.90  # a lone job with slots over one slot, at least
JOB_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Batch:
    """N jobs at once: aggregate tok/s over the wall time, and each one's first token."""

    name: str
    tokens: int
    wall_s: float
    first_token_s: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def first_token_ms(self) -> float:
        return statistics.median(self.first_token_s) * 1000


@dataclass(frozen=True)
class Memory:
    rss: int
    pss: int


def specs(args: argparse.Namespace, model: str, n: int) -> list[JobSpec]:
    """The batch's jobs: one prompt, a seed each, end-of-sequence banned, one window."""
    tokens = args.slots_tokens or (512 if args.model == TINY else 128)
    return [
        JobSpec(
            model=model,
            prompt=args.prompt,
            seed=args.seed + i,
            max_tokens=tokens,
            window_tokens=tokens,
            ignore_eos=True,
        )
        for i in range(n)
    ]


def section(args: argparse.Namespace, cache: Path) -> None:
    n = args.slots_jobs
    name = job_model(args.model)
    with local_stack(cache, {"GENQ_SLOTS": str(n)}, workers=0) as stack:
        registry = ModelRegistry.from_settings(stack.settings)
        config, path = registry.llama(name), registry.local_path(name)
        jobs = specs(args, name, n)
        say(
            f"model {name!r}: {n} jobs of {jobs[0].max_tokens} tokens after the prompt "
            f"{args.prompt!r}, EOS banned; {config.n_threads or 'all'} threads, n_batch "
            f"{config.n_batch}"
        )
        inprocess = in_process_batched(name, config, path, jobs)
        say(
            f"{inprocess.name}: {inprocess.tokens_per_s:,.1f} tok/s aggregate, first token "
            f"{inprocess.first_token_ms:.0f} ms"
        )
        slots, lone_slots, slots_memory = _genq(stack, f"--slots {n}", jobs, [])
        one, lone_one, one_memory = _genq(
            stack, f"-c {n} (one slot each)", jobs, ["--slots", "1", "-c", str(n)]
        )
        peer = _llama_server(args, name, config, path, jobs)
    _summary(n, inprocess, slots, one, peer)
    _lone(n, slots, lone_slots, lone_one)
    say(
        f"memory, one worker with --slots {n}: RSS {slots_memory.rss / 1e6:.0f} MB, PSS "
        f"{slots_memory.pss / 1e6:.0f} MB; {n} one-slot processes (-c {n}): RSS "
        f"{one_memory.rss / 1e6:.0f} MB, PSS {one_memory.pss / 1e6:.0f} MB"
    )


def in_process_batched(
    name: str, config: LlamaModelConfig, path: Path, jobs: list[JobSpec]
) -> Batch:
    """The jobs as sequences of one context, every step one decode of all of them."""
    backend = LlamaBackend(name, config, path)
    try:
        prompts = [backend.prompt_tokens(spec) for spec in jobs]
        decoder = Decoder(
            backend.model, config.n_ctx, len(jobs), config.n_batch, backend.threads, name
        )
        try:
            samplers = [Sampler(spec, spec.seed or 0, backend.vocab) for spec in jobs]
            return _decode_all(decoder, prompts, samplers, jobs[0].max_tokens)
        finally:
            decoder.close()
    finally:
        backend.close()


def _decode_all(
    decoder: Decoder, prompts: list[list[int]], samplers: list[Sampler], tokens: int
) -> Batch:
    started = time.perf_counter()
    index = {}
    for seq, prompt in enumerate(prompts):  # the prompts fit one batch
        index[seq] = decoder.add_all(prompt, 0, seq, output_last=True)
    decoder.decode()
    first: list[float] = []
    for step in range(tokens):
        sampled = [s.sample(decoder.ctx, index[seq]) for seq, s in enumerate(samplers)]
        if step == 0:
            first = [time.perf_counter() - started] * len(prompts)
        if step == tokens - 1:
            break
        for seq, item in enumerate(sampled):
            index[seq] = decoder.add(item.token, len(prompts[seq]) + step, seq, output=True)
        decoder.decode()
    wall = time.perf_counter() - started
    for sampler in samplers:
        sampler.close()
    return Batch("in-process batched llama.cpp", tokens * len(prompts), wall, first)


@contextmanager
def _worker(stack: Stack, args: list[str]) -> Iterator[Worker]:
    worker = Worker(env=stack.env, log=stack.cache / "worker-slots.log", args=tuple(args))
    stack.workers.append(worker)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        stack.workers.remove(worker)


def _genq(
    stack: Stack, label: str, jobs: list[JobSpec], args: list[str]
) -> tuple[Batch, Batch, Memory]:
    """A warm-up, a lone job, then the jobs at once."""
    with _worker(stack, args) as worker, Client(stack.settings) as client:
        _submit_all(client, jobs)  # warm-up: every process loads the model
        lone = _submit_all(client, jobs[:1])
        batch = _submit_all(client, jobs)
        memory = _memory(worker)
    say(
        f"genq, {label}: lone job {lone.tokens_per_s:,.1f} tok/s, first token "
        f"{lone.first_token_ms:.0f} "
        f"ms; {len(jobs)} at once {batch.tokens_per_s:,.1f} tok/s aggregate, first token median "
        f"{batch.first_token_ms:.0f} ms"
    )
    named = Batch(f"genq {label}", batch.tokens, batch.wall_s, batch.first_token_s)
    return named, lone, memory


def _submit_all(client: Client, jobs: list[JobSpec]) -> Batch:
    started = time.perf_counter()
    handles = [client.submit(spec) for spec in jobs]
    results: list[JobResult] = [h.result(timeout=JOB_TIMEOUT_S) for h in handles]
    wall = time.perf_counter() - started
    tokens = sum(r.usage.completion_tokens for r in results)
    first = [r.timings.first_token_ms / 1000 for r in results]
    return Batch("genq", tokens, wall, first)


def _memory(worker: Worker) -> Memory:
    """The worker's processes (Celery's main process and its pool's)."""
    assert worker.proc is not None
    root = psutil.Process(worker.proc.pid)
    procs = [root, *root.children(recursive=True)]
    infos = [p.memory_full_info() for p in procs]
    return Memory(sum(i.rss for i in infos), sum(i.pss for i in infos))


def _llama_server(
    args: argparse.Namespace, name: str, config: LlamaModelConfig, path: Path, jobs: list[JobSpec]
) -> Batch | None:
    """llama.cpp's own server with a slot per job and a streaming client per slot, asked
    for what genq's jobs were (prompt, seeds, sampling, tokens)."""
    binary = llama_server_bin.find()
    if binary is None:
        say("skipped llama-server: its binary was not found (make llama-server builds it)")
        return None
    if name == BENCH_MODEL:
        say("skipped llama-server: run the slots section with a real model (--model)")
        return None
    first = jobs[0]
    job = PeerJob([args.prompt], first.max_tokens, first.seed or 0, sampling(first))
    log = Path(tempfile.gettempdir()) / f"genq-bench-llama-server-{os.getpid()}.log"
    server = LlamaCppServer(path, config, log, binary=binary, parallel=len(jobs))
    try:
        result = run_peer(server, job)
    except (StackError, ServerError, OSError) as exc:
        print_tail(log)
        say(f"skipped llama-server: {exc}")
        return None
    say(result.describe())
    first_s = [ms / 1000 for ms in result.first_token_ms]
    return Batch(f"llama-server -np {len(jobs)}", result.tokens, result.wall_s, first_s)


def _summary(
    n: int,
    inprocess: Batch,
    slots: Batch,
    one: Batch,
    peer: Batch | None,
) -> None:
    rows = [inprocess, slots, one, *([peer] if peer else [])]
    width = max(len(b.name) for b in rows)
    say("", f"{'path':<{width}}  tok/s  first token ms (median)")
    for b in rows:
        say(f"{b.name:<{width}}  {b.tokens_per_s:5.1f}  {b.first_token_ms:8.0f}")
    say("")
    vs_inprocess = slots.tokens_per_s / inprocess.tokens_per_s
    say(
        f"genq --slots {n} / in-process batched: {vs_inprocess:.2f} "
        f"(target >= {TARGET_VS_INPROCESS}: {met(vs_inprocess >= TARGET_VS_INPROCESS)})"
    )
    if peer is not None:
        vs_peer = slots.tokens_per_s / peer.tokens_per_s
        say(
            f"genq --slots {n} / llama-server -np {n}: {vs_peer:.2f} "
            f"(target >= {TARGET_VS_LLAMA_SERVER}: {met(vs_peer >= TARGET_VS_LLAMA_SERVER)})"
        )
    say(f"genq --slots {n} / {n} one-slot processes: {slots.tokens_per_s / one.tokens_per_s:.2f}")


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
