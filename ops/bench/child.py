"""The benchmark's helper processes, each a process of its own as a user's would be: `python -m
ops.bench.child ROLE ARGS...` (GENQ_* settings from the environment), one JSON line at the end.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genq import Client, JobSpec, Settings
from genq.common.frames import TokenFrame
from genq.common.registry import ModelRegistry

READY = "ready"
TIMEOUT_S = 1800.0


def reader(client: Client) -> dict[str, Any]:
    """Prints `ready`, reads a job id on stdin and follows the job's stream counting frames
    (keeping none); the text's size is what the stream keeps by design."""
    print(READY, flush=True)
    frames = tokens = 0
    with client.job(sys.stdin.readline().strip()).stream(timeout=TIMEOUT_S) as stream:
        for frame in stream:
            frames += 1
            tokens += len(frame.data.token_ids) if isinstance(frame, TokenFrame) else 0
        text = stream.text
        return {
            "frames": frames,
            "tokens": tokens,
            "text_chars": len(text),
            "text_bytes": len(text.encode()),
            "completion_tokens": stream.result.usage.completion_tokens,
        }


def batch(client: Client, path: str) -> dict[str, Any]:
    """One `Client.submit_batch(FILE)`, timed."""
    started = time.perf_counter()
    handle = client.submit_batch(path)
    seconds = time.perf_counter() - started
    return {"jobs": handle.submission.created, "seconds": seconds, "batch_id": handle.batch_id}


def single(client: Client, path: str, count: str) -> dict[str, Any]:
    """`Client.submit()` for each of FILE's first N lines, parsed before the clock starts."""
    with Path(path).open() as file:
        lines = [json.loads(line) for _, line in zip(range(int(count)), file, strict=False)]
    jobs = [{k: v for k, v in line.items() if k != "custom_id"} for line in lines]
    started = time.perf_counter()
    for fields in jobs:
        client.submit(**fields)
    return {"jobs": len(jobs), "seconds": time.perf_counter() - started}


def generate(model: str, first: str, jobs: str, tokens: str, prompt: str) -> dict[str, Any]:
    """Loads the model with llama-cpp-python alone, prints `ready`, waits for a line on stdin
    (the parent starts every such process at once), then runs JOBS jobs back to back, seeds
    FIRST, FIRST + 1, ...: its span in wall-clock seconds (comparable across processes)."""
    from ops.bench import paths  # llama_cpp: this role alone loads it

    registry = ModelRegistry.from_settings(Settings())
    job = JobSpec(model=model, prompt=prompt, max_tokens=int(tokens), ignore_eos=True)
    specs = [
        job.model_copy(update={"seed": seed}) for seed in range(int(first), int(first) + int(jobs))
    ]
    with paths.loaded(registry.local_path(model), registry.llama(model)) as llm:
        print(READY, flush=True)
        sys.stdin.readline()
        start = time.time()
        made = sum(paths.generate(llm, spec).tokens for spec in specs)
        end = time.time()
    return {"start": start, "end": end, "jobs": len(specs), "tokens": made}


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/self/status")


def main(role: str, args: list[str]) -> int:
    """A producer's RSS is printed after imports, with the client connected, and at its peak:
    VmHWM, the process's own (ru_maxrss, printed too, carries the parent's peak across fork
    and exec on Linux)."""
    if role == "generate":
        print(json.dumps(generate(*args)), flush=True)
        return 0
    imports_kib = status_kib("VmRSS")
    with Client(Settings()) as client:
        client.workers()  # connected before the clock starts, as a long-lived producer is
        ready_kib = status_kib("VmRSS")
        roles: dict[str, Callable[..., dict[str, Any]]] = {"reader": reader, "batch": batch}
        done = (roles | {"single": single})[role](client, *args)
    if role != "reader":
        done |= {
            "imports_kib": imports_kib,
            "ready_kib": ready_kib,
            "peak_kib": status_kib("VmHWM"),
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KiB on Linux
        }
    print(json.dumps(done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
