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

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The benchmark's command line. Imported on call: the helper processes the benchmark
    starts (`python -m ops.bench.publisher`, `.reader`, ...) import this package first and
    should not pay for llama_cpp and the rest of the command."""
    from ops.bench.cli import main as run

    return run(argv)
