"""The one job every path runs: prompt, size and sampling parameters, from a single JobSpec;
and the model the benchmark runs its model sections on (`--model`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from genq.common import gemma
from genq.common.errors import PromptTooLong
from genq.common.schemas import JobSpec

TINY = "tiny"
REQUESTED_TOKENS = 2000  # the tiny model's streaming job
REAL_MODEL_TOKENS = 128  # a real model's: a few seconds a job, 30 jobs per path
# The tiny model's weights with a context that holds the whole job in one window; the model
# was trained at 256 tokens, which random weights do not mind.
BENCH_MODEL = "tiny-long"
BENCH_N_CTX = 2304
BAN_BIAS = -100.0  # the lowest logit bias a JobSpec takes; far below the tiny model's logits
DEFAULT_PROMPT = "Once upon a time"
DEFAULT_SEED = 1234


@dataclass(frozen=True)
class Workload:
    """`spec` is what genq is sent; the other paths read their parameters from it."""

    spec: JobSpec
    requested_tokens: int
    prompt_tokens: int
    n_ctx: int

    @property
    def tokens(self) -> int:
        return self.spec.max_tokens

    def describe(self) -> str:
        sampling = (
            f"temperature {self.spec.temperature}, top_k {self.spec.top_k}, "
            f"top_p {self.spec.top_p}, min_p {self.spec.min_p}, "
            f"repeat_penalty {self.spec.repeat_penalty}, seed {self.spec.seed}, EOS banned"
        )
        if self.spec.logit_bias:
            sampling += f", {len(self.spec.logit_bias)} non-UTF-8 byte tokens banned"
        size = (
            f"job: {self.tokens} tokens after a {self.prompt_tokens}-token prompt, "
            "as one continuation window in genq"
        )
        if self.tokens == self.requested_tokens:
            return f"{size}; {sampling}"
        return (
            f"{size} (requested {self.requested_tokens}; model {self.spec.model!r} has "
            f"n_ctx {self.n_ctx}, so at most n_ctx - prompt = {self.tokens} fit one context, "
            "which is what the paths without continuation windows can run; every path runs "
            "this size)\n"
            f"sampling: {sampling}"
        )


def default_model() -> str:
    """`gemma-3-270m` when its package is installed, else the tiny model."""
    return gemma.NAME if gemma.installed() else TINY


def job_model(model: str) -> str:
    """The registry entry the benchmark's jobs name: the tiny model's weights with a context
    that holds the streaming job (BENCH_MODEL) for `tiny`, the model itself otherwise."""
    return BENCH_MODEL if model == TINY else model


def base_spec(
    prompt: str, seed: int, max_tokens: int, banned: Sequence[int] = (), model: str = BENCH_MODEL
) -> JobSpec:
    """`banned`: token ids every path bans with the same logit bias, besides EOS."""
    return JobSpec(
        model=model,
        prompt=prompt,
        seed=seed,
        max_tokens=max_tokens,
        ignore_eos=True,
        logit_bias=dict.fromkeys(banned, BAN_BIAS),
    )


def fit(spec: JobSpec, prompt_tokens: int, n_ctx: int) -> Workload:
    """The largest job of at most `spec.max_tokens` tokens that fits one context window, run
    by genq as one continuation window (its default window is half the room, which would
    split the job in two: a second prompt evaluation and other tokens than the baselines)."""
    size = min(spec.max_tokens, n_ctx - prompt_tokens)
    if size < 2:
        raise PromptTooLong(
            f"a {prompt_tokens}-token prompt leaves under 2 tokens of the {n_ctx}-token context"
        )
    fitted = spec.model_copy(update={"max_tokens": size, "window_tokens": size})
    return Workload(fitted, spec.max_tokens, prompt_tokens, n_ctx)
