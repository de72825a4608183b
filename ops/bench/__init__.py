"""genq's benchmark: `python -m ops.bench` (or `make bench`); `--help` lists its sections.

Sections, each on a private stack (redis-server, relay, workers) and the tiny model: streaming
(genq end to end against in-process `Llama.generate()` and llama_cpp.server), relay throughput
(pub/sub into streams, against read-half, write-half and Redis baselines), recovery after a
worker is SIGKILLed mid-job, memory of the relay and a reader over a long job, how fast a
producer submits a large batch, and the per-job overhead of many short jobs. Figures are
printed with ratios against baselines measured in the same run; this is a benchmark, not a
test, and asserts nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

OMP_SPIN = "--omp-spin"  # see cli.py: leave OpenMP's idle threads spinning


def main(argv: Sequence[str] | None = None) -> int:
    """The benchmark's command line. Imported on call: the helper processes the benchmark
    starts (`python -m ops.bench.publisher`, `.reader`, ...) import this package first and
    should not pay for llama_cpp and the rest of the command."""
    args = sys.argv[1:] if argv is None else list(argv)
    if OMP_SPIN not in args:
        # Set before llama_cpp loads OpenMP, which reads it once; every process the run
        # starts (workers, baselines) inherits it, so that both sides of a ratio share it.
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    from ops.bench.cli import main as run

    return run(argv)
