"""The overhead section's baseline process: `python -m ops.bench.overhead_child MODEL FIRST
JOBS TOKENS PROMPT` (GENQ_* settings from the environment, for the model registry).

Loads the model with llama-cpp-python alone, prints `ready`, waits for a line on stdin, then
runs JOBS jobs one after another (`Llama.generate()` from a fresh context each, JobSpec's
default sampling, seeds FIRST, FIRST + 1, ...), TOKENS tokens each. Prints one JSON line: its
span in wall-clock seconds (comparable across processes), its CPU time, jobs and tokens.
"""

from __future__ import annotations

import json
import sys
import time

from genq import JobSpec, Settings
from genq.common.registry import ModelRegistry
from ops.bench import paths

READY = "ready"


def main(argv: list[str]) -> int:
    model, first, jobs, tokens, prompt = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    registry = ModelRegistry.from_settings(Settings())
    specs = [
        JobSpec(model=model, prompt=prompt, seed=seed, max_tokens=tokens, ignore_eos=True)
        for seed in range(first, first + jobs)
    ]
    with paths.loaded(registry.local_path(model), registry.llama(model)) as llm:
        print(READY, flush=True)
        sys.stdin.readline()  # the parent starts every baseline process at once
        start, cpu = time.time(), time.process_time()
        made = sum(paths.generate(llm, spec, tokens)[0].tokens for spec in specs)
        end, cpu = time.time(), time.process_time() - cpu
    done = {"start": start, "end": end, "cpu": cpu, "jobs": jobs, "tokens": made}
    print(json.dumps(done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
