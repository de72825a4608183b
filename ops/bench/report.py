"""What every section shares: the job it runs (`Workload`), what one streamed job looked like
(`Run`, `PathResult`), and how figures are printed (the machine, versions, tables, verdicts).

Every path is timed alike: `first_token_s` from the start (a call, a submit, a request) to
the first token, `span_s` from there to the end. Decode rate is `(tokens - 1) / span_s`, so
prompt evaluation and first-token latency stay out of it.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar

from genq import JobSpec, PromptTooLong
from genq.common import gemma

T = TypeVar("T")
U = TypeVar("U")
MS_PER_S = 1000.0
TINY = "tiny"
# The tiny model's weights with a context that holds the whole streaming job in one window.
BENCH_MODEL = "tiny-long"
BENCH_N_CTX = 2304
BAN_BIAS = -100.0  # the lowest logit bias a JobSpec takes; far below the tiny model's logits
DEFAULT_PROMPT = "Once upon a time"
DEFAULT_SEED = 1234
DISTRIBUTIONS = ("genq", "llama-cpp-python", "celery", "redis", "hiredis", "pydantic", "uvicorn")


def default_model() -> str:
    """`gemma-3-270m` when its package is installed, else the tiny model."""
    return gemma.NAME if gemma.installed() else TINY


def job_model(model: str) -> str:
    """The registry entry jobs name: BENCH_MODEL for `tiny`, the model itself otherwise."""
    return BENCH_MODEL if model == TINY else model


@dataclass(frozen=True)
class Workload:
    """`spec` is what genq is sent; the other paths read their parameters from it."""

    spec: JobSpec
    requested_tokens: int
    prompt_tokens: int

    @property
    def tokens(self) -> int:
        return self.spec.max_tokens

    def describe(self) -> str:
        spec = self.spec
        banned = f", {len(spec.logit_bias)} tokens banned" if spec.logit_bias else ""
        cut = "" if self.tokens == self.requested_tokens else f" (asked {self.requested_tokens})"
        return (
            f"job: {self.tokens} tokens{cut} after a {self.prompt_tokens}-token prompt, one "
            f"window in genq; temperature {spec.temperature}, top_k {spec.top_k}, top_p "
            f"{spec.top_p}, min_p {spec.min_p}, seed {spec.seed}, EOS banned{banned}"
        )


def base_spec(prompt: str, seed: int, tokens: int, banned: Sequence[int], model: str) -> JobSpec:
    """`banned`: token ids every path bans with the same logit bias, besides EOS."""
    bias = dict.fromkeys(banned, BAN_BIAS)
    return JobSpec(
        model=model, prompt=prompt, seed=seed, max_tokens=tokens, ignore_eos=True, logit_bias=bias
    )


def fit(spec: JobSpec, prompt_tokens: int, n_ctx: int) -> Workload:
    """The largest job of at most `spec.max_tokens` tokens that fits one context, run by genq
    as one window (its default window would split it: another prompt evaluation)."""
    size = min(spec.max_tokens, n_ctx - prompt_tokens)
    if size < 2:
        raise PromptTooLong(f"a {prompt_tokens}-token prompt leaves no room in n_ctx {n_ctx}")
    fitted = spec.model_copy(update={"max_tokens": size, "window_tokens": size})
    return Workload(fitted, spec.max_tokens, prompt_tokens)


@dataclass(frozen=True)
class Run:
    tokens: int
    first_token_s: float
    span_s: float

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - 1) / self.span_s if self.tokens > 1 and self.span_s > 0 else 0.0

    @property
    def job_s(self) -> float:
        return self.first_token_s + self.span_s


@dataclass(frozen=True)
class PathResult:
    """One path's measured runs (warm-ups excluded); medians over them."""

    name: str
    runs: Sequence[Run]

    @property
    def tokens(self) -> int:
        return min(run.tokens for run in self.runs)

    @property
    def tokens_per_s(self) -> float:
        return statistics.median(run.tokens_per_s for run in self.runs)

    @property
    def first_token_ms(self) -> float:
        return statistics.median(run.first_token_s for run in self.runs) * MS_PER_S

    @property
    def job_ms(self) -> float:
        return statistics.median(run.job_s for run in self.runs) * MS_PER_S

    @property
    def first_token_p90_ms(self) -> float:
        return percentile([run.first_token_s for run in self.runs], 90) * MS_PER_S


@dataclass(frozen=True)
class Batch:
    """Jobs run at once or one after another: aggregate tok/s over `wall_s`, from the first
    start to the last end; each job's first token counted from the start."""

    name: str
    runs: Sequence[Run]
    wall_s: float

    @property
    def tokens(self) -> int:
        return sum(run.tokens for run in self.runs)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def first_token_ms(self) -> float:
        return statistics.median(run.first_token_s for run in self.runs) * MS_PER_S


def alternate(first: Callable[[], T], second: Callable[[], U], rounds: int) -> list[tuple[T, U]]:
    """Both measured once a round, `first` first in odd rounds and `second` in even ones: a
    shared machine's speed drifts by tens of percent, and so weighs on both alike."""
    done = []
    for n in range(rounds):
        if n % 2 == 0:
            a = first()
            done.append((a, second()))
        else:
            b = second()
            done.append((first(), b))
    return done


def percentile(values: Sequence[float], pct: int) -> float:
    """Inclusive percentile (the median at 50); the single value for one sample."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def machine() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = f"{os.cpu_count()} cores" + (f" ({usable} usable)" if usable else "")
    return f"machine: {cores}, {platform.machine()}, {platform.system()} {platform.release()}"


def versions() -> str:
    found = [f"Python {platform.python_version()}"]
    for name in DISTRIBUTIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    binary = shutil.which("redis-server")
    out = subprocess.run(
        [binary or "false", "--version"], capture_output=True, text=True, check=False
    )
    found += [w.replace("v=", "redis-server ") for w in out.stdout.split() if w.startswith("v=")]
    policy = os.environ.get("OMP_WAIT_POLICY", "spin (OpenMP's default)")
    return f"versions: {', '.join(found)}\nOpenMP idle threads (OMP_WAIT_POLICY): {policy}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, the others right."""
    lines = [list(header), *map(list, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        out.append("  ".join(cells).rstrip())
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def path_table(rows: Sequence[tuple[PathResult, str]]) -> str:
    """Streamed paths side by side; each row's last cell its ratio to another path."""
    header = ("path", "tokens", "tok/s", "first-token ms", "p90 ms", "job ms", "ratio (tok/s)")
    return table(header, [_path_cells(res, ratio) for res, ratio in rows])


def _path_cells(res: PathResult, ratio: str) -> list[str]:
    return [
        f"{res.name} [{len(res.runs)} jobs]",
        str(res.tokens),
        f"{res.tokens_per_s:,.0f}",
        f"{res.first_token_ms:.2f}",
        f"{res.first_token_p90_ms:.2f}",
        f"{res.job_ms:.1f}",
        ratio,
    ]


def ratio(result: PathResult, base: PathResult, label: str) -> str:
    return f"{result.tokens_per_s / base.tokens_per_s:.2f} x {label}"


def say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def mb(size: float, sign: bool = False) -> str:
    """Bytes as decimal megabytes (10**6), as the memory targets are stated."""
    return f"{size / 1e6:{'+' if sign else ''}.1f} MB"
