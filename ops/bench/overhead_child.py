"""The overhead benchmark's baseline process: `python -m ops.bench.overhead_child FIRST JOBS
TOKENS PROMPT` (GENQ_* settings from the environment, for the model registry).

Loads the bench model as a worker does, prints `ready`, waits for a line on stdin, then runs
JOBS jobs one after another, seeds FIRST, FIRST + 1, ..., each TOKENS tokens with EOS banned,
every one from a fresh context (`reset()`), as genq's worker runs them. Prints one JSON line:
its generation span in wall-clock seconds (start and end, comparable across processes),
the CPU time it took, jobs and tokens.
"""

from __future__ import annotations

import json
import sys
import time

from llama_cpp import Llama

from common.prompts import prompt_tokens
from common.registry import ModelRegistry
from common.schemas import JobSpec
from common.settings import Settings
from ops.bench import inprocess
from ops.bench.workload import BENCH_MODEL

READY = "ready"


def job_spec(prompt: str, seed: int, tokens: int) -> JobSpec:
    """The job as genq is sent it (the sampling parameters are JobSpec's defaults)."""
    return JobSpec(model=BENCH_MODEL, prompt=prompt, seed=seed, max_tokens=tokens, ignore_eos=True)


def run_job(llm: Llama, spec: JobSpec) -> int:
    """One job as the worker runs it: tokenize, reset, seed, sample; returns tokens made."""
    context = prompt_tokens(llm, spec)
    llm.reset()  # type: ignore[no-untyped-call]
    llm.set_seed(spec.seed or 0)
    made = 0
    for _token in llm.generate(
        context,
        top_k=spec.top_k,
        top_p=spec.top_p,
        min_p=spec.min_p,
        temp=spec.temperature,
        repeat_penalty=spec.repeat_penalty,
        reset=False,
        logits_processor=inprocess.bias(llm, spec),
    ):
        made += 1
        if made >= spec.max_tokens:
            break
    return made


def main(argv: list[str]) -> int:
    first, jobs, tokens, prompt = int(argv[0]), int(argv[1]), int(argv[2]), argv[3]
    registry = ModelRegistry.from_settings(Settings())
    llm = inprocess.load(registry.local_path(BENCH_MODEL), registry.llama(BENCH_MODEL))
    specs = [job_spec(prompt, seed, tokens) for seed in range(first, first + jobs)]
    print(READY, flush=True)
    sys.stdin.readline()  # the parent starts every baseline process at once
    start, cpu = time.time(), time.process_time()
    made = sum(run_job(llm, spec) for spec in specs)
    end, cpu = time.time(), time.process_time() - cpu
    llm.close()
    done = {"start": start, "end": end, "cpu": cpu, "jobs": jobs, "tokens": made}
    print(json.dumps(done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
