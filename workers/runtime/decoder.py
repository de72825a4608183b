"""A llama.cpp context and its token batch, through llama-cpp-python's low-level API: what
the batched engine (workers.runtime.engine) and a deterministic job's own sequence (workers.solo)
decode with.

A context holds `n_seq` sequences, each with its own KV cache of `n_ctx_seq` cells (llama.cpp's
non-unified cache): one sequence's room never depends on the others', and its attention reads
only its own cells.

Batch invariance: a sequence's logits here are bit-identical whatever else shares its batch and
however its context was evaluated (token by token or in chunks of any size). That takes three
settings, each removing a computation whose order of summation depends on the batch's shape:
- no llamafile `sgemm` (a build option, `-DGGML_LLAMAFILE=OFF`, see workers.runtime.weights): it
  serves matrix products of two or more rows, while one row takes ggml's `vec_dot`;
- no weight repacking (`use_extra_bufts = false`, genq.workers.runtime.weights): CPU_REPACK switches
  between gemv and gemm kernels by batch size;
- no flash attention: ggml's CPU kernel tiles a chunk of 64 or more queries, and splits a
  lone query's keys across threads from 512 cells on; without it attention is `vec_dot` rows
  and a row-wise softmax, whose masked cells add exact zeros.
Every remaining op is computed row by row. tests/realmodel and tests/integration check it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import llama_cpp as lc

from genq.common.errors import GenerationError, ModelLoadError

# A token's logits from a batch-invariant attention path (see the module's docstring).
FLASH_ATTN = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED


class Decoder:
    """One context: add tokens to the batch, decode it, edit a sequence's cache."""

    def __init__(
        self,
        model: lc.llama_model_p,
        n_ctx_seq: int,
        n_seq: int,
        n_batch: int,
        n_threads: int,
        name: str,
    ) -> None:
        params = lc.llama_context_default_params()
        params.n_ctx = n_ctx_seq * n_seq
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.kv_unified = False
        params.flash_attn_type = FLASH_ATTN
        params.no_perf = True
        ctx = lc.llama_init_from_model(model, params)
        if not ctx:
            raise ModelLoadError(
                f"model {name!r}: llama.cpp could not create a context of {n_seq} sequences "
                f"x {n_ctx_seq} tokens (memory?)"
            )
        self.ctx: lc.llama_context_p = ctx
        self.n_batch, self.n_seq, self.name = n_batch, n_seq, name
        self.n_ctx_seq = n_ctx_seq
        self._memory = lc.llama_get_memory(ctx)
        self._batch = lc.llama_batch_init(n_batch, 0, 1)

    def __len__(self) -> int:
        """Tokens in the batch being built."""
        return int(self._batch.n_tokens)

    @property
    def room(self) -> int:
        """Tokens the batch being built can still take."""
        return self.n_batch - int(self._batch.n_tokens)

    def add(self, token: int, pos: int, seq: int, output: bool) -> int:
        """Add a token at position `pos` of sequence `seq`; its batch index (for sampling)
        when `output` asks for its logits. GenerationError when the batch is full: the
        engine never builds one larger than `n_batch`, and a bug must not write past it."""
        batch = self._batch
        i = batch.n_tokens
        if i >= self.n_batch:
            raise GenerationError(f"model {self.name!r}: batch full at {i} tokens")
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = 1 if output else 0
        batch.n_tokens = i + 1
        return int(i)

    def add_all(self, tokens: Sequence[int], start: int, seq: int, output_last: bool) -> int:
        """Add `tokens` at positions from `start`; the last one's batch index."""
        last = -1
        for offset, token in enumerate(tokens):
            output = output_last and offset == len(tokens) - 1
            last = self.add(token, start + offset, seq, output)
        return last

    def decode(self) -> None:
        """Decode the batch (and empty it). GenerationError when llama.cpp cannot."""
        if self._batch.n_tokens == 0:
            return
        try:
            status = lc.llama_decode(self.ctx, self._batch)
        finally:
            self._batch.n_tokens = 0
        if status != 0:
            reason = "no room in the KV cache" if status == 1 else f"status {status}"
            raise GenerationError(f"model {self.name!r}: llama_decode failed: {reason}")

    def clear_batch(self) -> None:
        """Drop the batch being built (a step that failed before its decode)."""
        self._batch.n_tokens = 0

    def forget(self, seq: int, start: int = 0) -> None:
        """Drop sequence `seq`'s cached positions from `start` on."""
        lc.llama_memory_seq_rm(self._memory, seq, start, -1)

    def clear(self) -> None:
        """Drop every sequence's cache."""
        lc.llama_memory_clear(self._memory, True)

    def close(self) -> None:
        if self.ctx:
            lc.llama_batch_free(self._batch)
            lc.llama_free(self.ctx)
            self.ctx = ctypes.c_void_p(0)  # type: ignore[assignment]


def common_prefix(cached: Sequence[int], tokens: Sequence[int]) -> int:
    """How many leading tokens the two share."""
    n = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n
