"""What the benchmark prints: the machine, versions, and the closing table."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from ops.bench.measure import PathResult

DISTRIBUTIONS = (
    "genq",
    "llama-cpp-python",
    "celery",
    "redis",
    "hiredis",  # redis-py's reply parser when installed; the relay's speed depends on it
    "pydantic",
    "uvicorn",
    "fastapi",
)


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
    found.append(_redis_server_version())
    return "versions: " + ", ".join(found)


def openmp() -> str:
    policy = os.environ.get("OMP_WAIT_POLICY")
    spin = "spin (OpenMP's default)" if policy is None else policy
    return f"OpenMP idle threads (OMP_WAIT_POLICY, every process of the run): {spin}"


def _redis_server_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "redis-server (not found)"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    words = [w for w in out.stdout.split() if w.startswith("v=")]
    return f"redis-server {words[0].removeprefix('v=')}" if words else "redis-server (unknown)"


@dataclass(frozen=True)
class Row:
    result: PathResult
    ratio: str  # tok/s against the path it is compared with, e.g. "0.85 x in-process"


def ratio(result: PathResult, base: PathResult, label: str) -> str:
    return f"{result.tokens_per_s / base.tokens_per_s:.2f} x {label}"


def table(rows: Sequence[Row]) -> str:
    header = ("path", "tokens", "tok/s", "first-token ms", "p90 ms", "job ms", "ratio (tok/s)")
    lines = [header]
    for row in rows:
        res = row.result
        lines.append(
            (
                f"{res.name} [{len(res.runs)} jobs]",
                str(res.tokens),
                f"{res.tokens_per_s:,.0f}",
                f"{res.first_token_ms:.2f}",
                f"{res.first_token_p90_ms:.2f}",
                f"{res.job_ms:.1f}",
                row.ratio,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def mb(size: float, sign: bool = False) -> str:
    """Bytes as decimal megabytes (10**6), as the memory targets are stated."""
    return f"{size / 1e6:{'+' if sign else ''}.1f} MB"
