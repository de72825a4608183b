"""Batch invariance, measured: a sequence's logits under different batches and chunkings.

Every probe decodes the same sequence 0 in genq's decoder (workers.runtime.decoder, over weights
loaded by workers.runtime.weights): a prompt, then `STEPS` greedy tokens. The reference evaluates
the prompt token by token, alone. A variant changes the prompt's chunk size, or adds `others`
sequences (other prompts, so other positions) that decode a token in every one of sequence
0's batches, its prompt chunks included. A probe returns sequence 0's logits after its
prompt and after each step, compared bit for bit.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp as lc
import numpy as np
import numpy.typing as npt

from genq.common.adapters.ggml_invariance import make_invariant
from genq.workers.runtime.decoder import Decoder
from genq.workers.runtime.weights import free_weights, load_weights

Logits = npt.NDArray[np.float32]
STEPS = 16
TEXT = (
    "The history of the city begins in the early middle ages, when a small settlement grew "
    "around the river crossing and its market, and merchants came from far away to trade. "
)


@dataclass
class Model:
    decoder: Decoder
    n_vocab: int
    prompt: list[int]  # longer than n_batch: its last chunk of n_batch is a whole one
    others: list[list[int]]
    reference: list[Logits] = field(default_factory=list)


@contextmanager
def open_model(path: Path, n_ctx: int, slots: int, n_batch: int) -> Iterator[Model]:
    """A decoder of `slots` sequences over the model at `path`, set up as genq's engine is."""
    make_invariant()
    vocab = lc.Llama(model_path=str(path), vocab_only=True, verbose=False)
    weights = load_weights(path, 0, path.name)
    decoder = Decoder(weights, n_ctx, slots, n_batch, 2, path.name)
    try:
        words = vocab.tokenize((TEXT * 40).encode())
        prompt = words[: n_batch + 9]
        assert len(prompt) + STEPS <= n_ctx, "the probe's prompt must fit a sequence"
        others = [words[7 * i : 7 * i + 5 + 3 * i] for i in range(1, slots)]
        yield Model(decoder, vocab.n_vocab(), prompt, others)
    finally:
        decoder.close()
        free_weights(weights)
        vocab.close()


def assert_invariant(model: Model, chunk: int = 1, others: int = 0) -> None:
    """Sequence 0's logits equal the reference's bit for bit (the reference: chunks of 1,
    alone); the assertion names the largest difference."""
    if not model.reference:
        model.reference = probe(model, chunk=1, others=0)
    rows = probe(model, chunk, others)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(rows, model.reference, strict=True))
    same = all(a.tobytes() == b.tobytes() for a, b in zip(rows, model.reference, strict=True))
    assert same, f"chunks of {chunk} beside {others} others: max |Δlogit| {difference}"


def probe(model: Model, chunk: int, others: int) -> list[Logits]:
    decoder, prompt = model.decoder, model.prompt
    decoder.clear()
    heads = [(seq, list(p)) for seq, p in enumerate(model.others[:others], 1)]
    done = {seq: 0 for seq, _ in heads}  # each other sequence's evaluated tokens
    rows: list[Logits] = []
    for start in range(0, len(prompt), chunk):
        part = prompt[start : start + chunk]
        index = decoder.add_all(part, start, 0, output_last=start + chunk >= len(prompt))
        _add_others(model, heads, done)
        if start + chunk >= len(prompt):
            rows.append(_decode(model, index))
        else:
            decoder.decode()
    for step in range(STEPS):
        token = int(rows[-1].argmax())
        index = decoder.add(token, len(prompt) + step, 0, output=True)
        _add_others(model, heads, done)
        rows.append(_decode(model, index))
    return rows


def _add_others(model: Model, heads: Sequence[tuple[int, list[int]]], done: dict[int, int]) -> None:
    """One more token of each other sequence: its prompt's next, then a fixed walk of the
    vocabulary (what they generate does not matter, only that they share the batch)."""
    for seq, tokens in heads:
        pos = done[seq]
        token = tokens[pos] if pos < len(tokens) else (pos * 7919 + seq) % model.n_vocab
        model.decoder.add(token, pos, seq, output=pos >= len(tokens) - 1)
        done[seq] = pos + 1


def _decode(model: Model, index: int) -> Logits:
    model.decoder.decode()
    pointer = lc.llama_get_logits_ith(model.decoder.ctx, index)
    array = ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float))
    return np.ctypeslib.as_array(array, (model.n_vocab,)).copy()
