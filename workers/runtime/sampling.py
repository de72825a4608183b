"""Sampling a sequence's next token with llama.cpp's own sampler chain, and its log
probabilities from the sequence's own logits row.

One chain per sequence and window: logit bias (with `ignore_eos`), repeat penalty, top-k,
top-p, min-p, temperature and a draw (temperature 0: greedy). The draw of the token at output
position p is seeded from the job seed and p alone (`token_seed`), not from a generator that
advanced through the tokens before it: a job resumed at any position, on any worker, draws
what an uninterrupted run drew there. The chain runs in llama.cpp, so the per-token work in
Python is a few calls, whatever the settings, and sequences of one batch sample independently.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import llama_cpp as lc
import numpy as np

from genq.common.errors import InvalidJob
from genq.common.schemas import JobSpec, TokenLogprob, TopLogprob
from genq.workers.generation.sampled import Sampled

# Tokens of recent output the repeat penalty looks at (llama-cpp-python's default, which
# genq used before its own chain).
PENALTY_LAST_N = 64


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """What sampling needs of a model: its vocabulary size, end-of-sequence token, and a
    token's text (for log probabilities; a partial UTF-8 character replaced)."""

    n_vocab: int
    eos: int
    text: Callable[[int], str]


def token_seed(seed: int, position: int) -> int:
    """The draw's seed for output token `position` of a job seeded `seed` (32 bits, as
    llama.cpp's distribution sampler takes)."""
    digest = hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


class Sampler:
    """A job window's native sampler chain; freed with `close()` (or when collected).
    `position` is the output position of the next token it samples."""

    def __init__(
        self,
        spec: JobSpec,
        seed: int,
        vocab: Vocabulary,
        context: Sequence[int] = (),
        position: int = 0,
    ) -> None:
        self._chain: lc.llama_sampler_p | None = None
        self.seed, self.position = seed, position
        self._drawn_at: int | None = None  # the position the chain's draw is seeded for
        self.vocab = vocab
        self.top = spec.logprobs  # alternatives to report per token; None: no logprobs
        n_vocab = vocab.n_vocab
        bias = _bias(spec, n_vocab, vocab.eos)
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        self._chain = chain
        if bias:
            array = (lc.llama_logit_bias * len(bias))()
            for i, (token, value) in enumerate(bias.items()):
                array[i] = lc.llama_logit_bias(token, value)
            self._add(lc.llama_sampler_init_logit_bias(n_vocab, len(bias), array))
        if spec.repeat_penalty != 1.0:
            penalties = lc.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, spec.repeat_penalty, 0.0, 0.0
            )
            # The window's context is the history it penalizes, as llama.cpp's own samplers
            # take the prompt: a window resumed elsewhere starts from the same history.
            for token in context[-PENALTY_LAST_N:]:
                lc.llama_sampler_accept(penalties, token)
            self._add(penalties)
        if spec.temperature == 0:
            self._add(lc.llama_sampler_init_greedy())
            return
        if spec.top_k > 0:
            self._add(lc.llama_sampler_init_top_k(spec.top_k))
        self._add(lc.llama_sampler_init_top_p(spec.top_p, 1))
        self._add(lc.llama_sampler_init_min_p(spec.min_p, 1))
        self._add(lc.llama_sampler_init_temp(spec.temperature))
        self._add(lc.llama_sampler_init_dist(token_seed(seed, position)))
        self._drawn_at = position

    def _add(self, sampler: lc.llama_sampler_p) -> None:
        lc.llama_sampler_chain_add(self._chain, sampler)

    def sample(self, ctx: lc.llama_context_p, index: int) -> Sampled:
        """The next token from the logits of the batch's `index`-th token (-1: the last
        output); the chain takes it as generated (the repeat penalty's history)."""
        if self._drawn_at is not None and self._drawn_at != self.position:
            self._reseed()
        token = int(lc.llama_sampler_sample(self._chain, ctx, index))
        self.position += 1
        if self.top is None:
            return Sampled(token)
        vocab = self.vocab
        return Sampled(token, logprob(ctx, index, vocab.n_vocab, token, self.top, vocab.text))

    def _reseed(self) -> None:
        """Replace the chain's last sampler, the draw, by one seeded for this position
        (llama.cpp's draw cannot be re-seeded in place)."""
        chain = self._chain
        last = lc.llama_sampler_chain_n(chain) - 1
        lc.llama_sampler_free(lc.llama_sampler_chain_remove(chain, last))
        self._add(lc.llama_sampler_init_dist(token_seed(self.seed, self.position)))
        self._drawn_at = self.position

    def close(self) -> None:
        if self._chain is not None:
            lc.llama_sampler_free(self._chain)
            self._chain = None

    def __del__(self) -> None:
        self.close()


def _bias(spec: JobSpec, n_vocab: int, eos: int) -> dict[int, float]:
    bias = {int(token): float(value) for token, value in spec.logit_bias.items()}
    if bias and (min(bias) < 0 or max(bias) >= n_vocab):
        raise InvalidJob("logit_bias names a token id outside the model's vocabulary")
    if spec.ignore_eos:
        bias[eos] = -float("inf")
    return bias


def logprob(
    ctx: lc.llama_context_p,
    index: int,
    n_vocab: int,
    token: int,
    top: int,
    text: Callable[[int], str],
) -> TokenLogprob:
    """The sampled token's log probability, with `top` alternatives, from the raw logits of
    the batch's `index`-th output: log-softmax before temperature and the other settings, as
    OpenAI and llama.cpp's servers report them. Read before the next decode overwrites them."""
    pointer = lc.llama_get_logits_ith(ctx, index)
    raw = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), (n_vocab,))
    logits = raw.astype(np.float64)
    peak = logits.max()
    logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))
    best: list[int] = []
    if top:
        part = np.argpartition(-logprobs, min(top, n_vocab) - 1)[:top]
        best = sorted(part.tolist(), key=lambda t: (-logprobs[t], t))
    return TokenLogprob(
        token=text(token),
        logprob=float(logprobs[token]),
        top=[TopLogprob(token=text(t), logprob=float(logprobs[t])) for t in best],
    )
