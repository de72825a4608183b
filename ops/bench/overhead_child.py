"""The overhead benchmark's baseline process: `python -m ops.bench.overhead_child MODEL FIRST
JOBS TOKENS PROMPT` (GENQ_* settings from the environment, for the model registry).

Loads the model as a worker does (workers/backends/llama.py), prints `ready`, waits for a line
on stdin, then runs JOBS jobs one after another through the worker's own generation loop
(workers/generation.py), seeds FIRST, FIRST + 1, ..., each TOKENS tokens with EOS banned, every
one from a fresh context, as genq's worker runs them. Prints one JSON line: its generation
span in wall-clock seconds (start and end, comparable across processes), the CPU time it
took, jobs and tokens.
"""

from __future__ import annotations

import json
import sys
import time

from genq.common.registry import ModelRegistry
from genq.common.schemas import JobSpec
from genq.common.settings import Settings
from ops.bench import inprocess

READY = "ready"


def job_spec(model: str, prompt: str, seed: int, tokens: int) -> JobSpec:
    """The job as genq is sent it (the sampling parameters are JobSpec's defaults)."""
    return JobSpec(model=model, prompt=prompt, seed=seed, max_tokens=tokens, ignore_eos=True)


def main(argv: list[str]) -> int:
    model, first, jobs, tokens, prompt = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    settings = Settings()
    registry = ModelRegistry.from_settings(settings)
    backend = inprocess.load(model, registry.local_path(model), registry.llama(model))
    specs = [job_spec(model, prompt, seed, tokens) for seed in range(first, first + jobs)]
    print(READY, flush=True)
    sys.stdin.readline()  # the parent starts every baseline process at once
    start, cpu = time.time(), time.process_time()
    made = sum(len(inprocess.run_job(backend, spec, settings).token_ids) for spec in specs)
    end, cpu = time.time(), time.process_time() - cpu
    backend.close()
    done = {"start": start, "end": end, "cpu": cpu, "jobs": jobs, "tokens": made}
    print(json.dumps(done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
