"""The streaming benchmark: `python -m ops.bench` (or `make bench`).

One job on the tiny model, end-of-sequence banned, measured four ways in one run:
llama-cpp-python's `Llama.generate()` in this process (the ceiling), genq end to end
(producer → Celery → worker → Redis pub/sub → subscriber), the first-token latency the queue
adds, and llama-cpp-python's own OpenAI-compatible server streaming SSE (what a user would run
instead). Figures are printed with ratios against the baselines measured in the same run; this
is a benchmark, not a test, and asserts nothing about speed.
"""

from ops.bench.cli import main

__all__ = ["main"]
