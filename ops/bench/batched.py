"""In-process batched decoding with llama-cpp-python alone: the slots section's baselines.

N sequences of one prompt in one context (the worker's n_ctx per sequence, non-unified cache,
n_ubatch = n_batch), the prompts in one batch, then one `llama_decode` per step for all and a
token picked per sequence: its argmax (`limit`, the machine's ceiling) or the jobs' sampler
chain, genq's, from llama.cpp's samplers (EOS banned, top-k, top-p, min-p, temperature, a
seeded draw). Each variant (VARIANTS) runs in a process of its own, because ggml reads
GGML_CPU_TILED_MM once per process (`python -m ops.bench.batched SPEC`, a JSON line back).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import llama_cpp as lc
import numpy as np

from ops.localstack import StackError

RUN_TIMEOUT_S = 900.0
WARM_TOKENS = 4
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
class Loop:
    """One measured run: seconds in all and per part, from the prompts' batch on."""

    tokens: int
    steps: int  # decodes after the prompts'
    wall_s: float
    first_token_s: float
    decode_s: float
    pick_s: float


def run(spec: Spec) -> Loop:
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
    return Loop(**json.loads(out.stdout.splitlines()[-1]))


def measure(spec: Spec) -> Loop:
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
        _loop(ctx, batch, spec, picks, WARM_TOKENS)
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        return _loop(ctx, batch, spec, picks, spec.tokens)
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


def _loop(
    ctx: lc.llama_context_p, batch: lc.llama_batch, spec: Spec, picks: Sequence[Pick], tokens: int
) -> Loop:
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
    return Loop(tokens * spec.n_seq, tokens - 1, wall, first, decode, pick)


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
    loop = measure(Spec(**json.loads(sys.argv[1])))
    print(json.dumps(asdict(loop)), flush=True)
