"""What every section shares: the job, a streamed job's timing (`Run`; `PathResult`, `Batch`
for many) and how figures are printed. Every path is timed alike: `first_token_s` from the
start (a call, a submit, a request) to the first token, `span_s` from there to the end; decode
rate is `(tokens - 1) / span_s`, leaving prompt evaluation and first-token latency out."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TypeVar

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
    """The registry entry jobs name: BENCH_MODEL for `tiny`."""
    return BENCH_MODEL if model == TINY else model


@dataclass(frozen=True)
class Run:
    tokens: int
    first_token_s: float
    span_s: float

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - 1) / self.span_s if self.tokens > 1 and self.span_s > 0 else 0.0


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

    def ms(self, pct: int, of: Callable[[Run], float]) -> float:
        """The runs' `pct` percentile of `of`, in ms (the median at 50)."""
        return percentile([of(run) for run in self.runs], pct) * MS_PER_S


@dataclass(frozen=True)
class Batch(PathResult):
    """Jobs run at once or one after another: aggregate tok/s over `wall_s`, from the first
    start to the last end; each job's first token counted from the start."""

    wall_s: float

    @property
    def tokens(self) -> int:
        return sum(run.tokens for run in self.runs)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


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


def paused(pause_s: float, call: Callable[[], T]) -> Callable[[], T]:
    """`call` after `pause_s` of quiet: a worker acks its task after the job's done frame."""

    def run() -> T:
        time.sleep(pause_s)
        return call()

    return run


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
    found = [f"Python {platform.python_version()}", *map(_version, DISTRIBUTIONS)]
    command = [shutil.which("redis-server") or "false", "--version"]
    out = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    found += [w.replace("v=", "redis-server ") for w in out.split() if w.startswith("v=")]
    policy = os.environ.get("OMP_WAIT_POLICY", "spin (OpenMP's default)")
    return f"versions: {', '.join(found)}\nOpenMP idle threads (OMP_WAIT_POLICY): {policy}"


def _version(name: str) -> str:
    try:
        return f"{name} {metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return f"{name} (not installed)"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first left-aligned, the others right."""
    lines = [list(header), *map(list, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        pairs = enumerate(zip(line, widths, strict=True))
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs))
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


def path_table(rows: Sequence[tuple[PathResult, str]]) -> str:
    """Streamed paths side by side; each row's last cell its ratio to another path."""
    header = ("path", "tokens", "tok/s", "first-token ms", "p90 ms", "job ms", "ratio (tok/s)")
    return table(header, [
        [f"{res.name} [{len(res.runs)} jobs]", str(res.tokens), f"{res.tokens_per_s:,.0f}",
         f"{res.first_token_ms:.2f}", f"{res.ms(90, lambda r: r.first_token_s):.2f}",
         f"{res.ms(50, lambda r: r.first_token_s + r.span_s):.1f}", versus]
        for res, versus in rows
    ])  # fmt: skip


def ratio(result: PathResult, base: PathResult, label: str) -> str:
    return f"{result.tokens_per_s / base.tokens_per_s:.2f} x {label}"


def say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def mb(size: float, sign: bool = False) -> str:
    """Bytes as decimal megabytes (10**6), as the memory targets are stated."""
    return f"{size / 1e6:{'+' if sign else ''}.1f} MB"
