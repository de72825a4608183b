"""Deterministic windows: a job decoded in a llama.cpp context of its own.

llama.cpp's CPU decode is not batch-invariant: a sequence's logits depend on what else is in
its batch. A job that asks for bit-for-bit resume (`deterministic`) therefore never shares a
batch: each of its windows clears its own context, evaluates the prompt and the kept output
in chunks of `n_batch` tokens, then decodes one token at a time. That is the same computation
on every worker, whether the window follows the previous one or resumes after a crash.

A worker keeps a pool of such contexts per model, created when first needed, one per
deterministic job running at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence

from workers.decoder import Decoder
from workers.generation import Sampled
from workers.sampling import Sampler

DecoderFactory = Callable[[], Decoder]


class SoloPool:
    """Single-sequence contexts of one model, lent one per job."""

    def __init__(self, make: DecoderFactory) -> None:
        self._make = make
        self._free: list[Decoder] = []
        self._all: list[Decoder] = []
        self._lock = threading.Lock()

    def take(self) -> Decoder:
        with self._lock:
            if self._free:
                return self._free.pop()
        decoder = self._make()
        with self._lock:
            self._all.append(decoder)
        return decoder

    def give(self, decoder: Decoder) -> None:
        with self._lock:
            self._free.append(decoder)

    def close(self) -> None:
        with self._lock:
            for decoder in self._all:
                decoder.close()
            self._all, self._free = [], []


def solo_window(decoder: Decoder, context: Sequence[int], sampler: Sampler) -> Generator[Sampled]:
    """Tokens after `context`, endlessly (the caller stops), from a fresh evaluation."""
    decoder.clear()
    n_batch = decoder.n_batch
    index = -1
    for start in range(0, len(context), n_batch):
        chunk = context[start : start + n_batch]
        index = decoder.add_all(chunk, start, 0, output_last=start + n_batch >= len(context))
        decoder.decode()
    pos = len(context)
    try:
        while True:
            sampled = sampler.sample(decoder.ctx, index)
            yield sampled
            index = decoder.add(sampled.token, pos, 0, output=True)
            decoder.decode()
            pos += 1
    finally:
        sampler.close()
