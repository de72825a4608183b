"""genq's benchmark: `python -m ops.bench` (or `make bench`); `--help` lists its sections.
Each section starts a private stack as a user does, prints its figures with ratios against
baselines measured in the same run, and asserts nothing (ops/bench/cli.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The benchmark's command line, imported on call: the helper processes a run starts
    (`python -m ops.bench.child`, `.load`) import this package first, and should not pay for
    llama_cpp and the rest of the command."""
    if "--omp-spin" not in (sys.argv[1:] if argv is None else argv):
        # Set before llama_cpp loads OpenMP, which reads it once; every process the run
        # starts (workers, baselines) inherits it, so that both sides of a ratio share it.
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    from ops.bench.cli import main as run

    return run(argv)
