"""Batch invariance, measured: a sequence's logits under different batches and chunkings.

Every probe decodes the same sequence: a prompt, then `steps` greedy tokens. The reference
evaluates the prompt token by token, alone in its context. A variant changes one thing: the
prompt's chunk size, or `others` more sequences (other prompts, other positions) decoding in
the same batches. Each returns the sequence's logits at every step, to compare bit for bit.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import llama_cpp as lc
import numpy as np
import numpy.typing as npt

from workers.decoder import Decoder

Logits = npt.NDArray[np.float32]


def _row(decoder: Decoder, index: int, n_vocab: int) -> Logits:
    pointer = lc.llama_get_logits_ith(decoder.ctx, index)
    array = ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float))
    return np.ctypeslib.as_array(array, (n_vocab,)).copy()


def probe(
    decoder: Decoder,
    n_vocab: int,
    prompt: Sequence[int],
    steps: int,
    chunk: int = 1,
    others: Sequence[Sequence[int]] = (),
) -> list[Logits]:
    """Sequence 0's logits after its prompt and after each of `steps` greedy tokens, its
    prompt evaluated in chunks of `chunk`, beside `others` (one prompt per other sequence,
    each evaluated in one chunk first, then decoding greedily in the same steps)."""
    decoder.clear()
    heads = _start_others(decoder, n_vocab, others)
    index = -1
    for start in range(0, len(prompt), chunk):
        part = prompt[start : start + chunk]
        index = decoder.add_all(part, start, 0, output_last=start + chunk >= len(prompt))
        decoder.decode()
    rows = [_row(decoder, index, n_vocab)]
    pos = len(prompt)
    for _ in range(steps):
        token = int(rows[-1].argmax())
        index = decoder.add(token, pos, 0, output=True)
        outs = [decoder.add(t, p, seq, output=True) for seq, (t, p) in heads.items()]
        decoder.decode()
        rows.append(_row(decoder, index, n_vocab))
        heads = {
            seq: (int(_row(decoder, out, n_vocab).argmax()), p + 1)
            for (seq, (_, p)), out in zip(heads.items(), outs, strict=True)
        }
        pos += 1
    return rows


def _start_others(
    decoder: Decoder, n_vocab: int, others: Sequence[Sequence[int]]
) -> dict[int, tuple[int, int]]:
    """Evaluate the other sequences' prompts; each one's next token and position."""
    heads = {}
    for seq, prompt in enumerate(others, 1):
        index = decoder.add_all(prompt, 0, seq, output_last=True)
        decoder.decode()
        heads[seq] = (int(_row(decoder, index, n_vocab).argmax()), len(prompt))
    return heads


def max_difference(a: Sequence[Logits], b: Sequence[Logits]) -> float:
    """The largest |difference| of two probes' logits (0.0: bit-identical or equal)."""
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def identical(a: Sequence[Logits], b: Sequence[Logits]) -> bool:
    return len(a) == len(b) and all(x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))
