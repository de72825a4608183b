"""A producer process for the submit benchmark: `python -m ops.bench.submit_child MODE FILE [N]`
(GENQ_* settings from the environment).

MODE `batch` times one `Client.submit_batch(FILE)`; MODE `single` times `Client.submit()`
for each of the first N lines of FILE, one after another. A process of its own, so that its
peak RSS is the producer's alone. Prints one JSON line: jobs, seconds, batch_id (batch only),
its resident set in KiB after imports and once the client is connected, and its peak at the
end.

The peak is the kernel's high-water mark of this process's own memory (VmHWM).
`ru_maxrss` is printed too, but it is no measure of the child: Linux carries the parent's
high-water mark across fork and exec into it, so it reads the benchmark process's peak.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from genq import Client, Settings


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"no {field} in /proc/self/status")


def maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def submit_batch(client: Client, path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    handle = client.submit_batch(str(path))
    seconds = time.perf_counter() - started
    return {"jobs": handle.submission.created, "seconds": seconds, "batch_id": handle.batch_id}


def submit_singly(client: Client, path: Path, count: int) -> dict[str, Any]:
    """The lines are parsed before the clock starts: only the submits are timed."""
    with path.open() as file:
        lines = [json.loads(line) for _, line in zip(range(count), file, strict=False)]
    jobs = [{k: v for k, v in line.items() if k != "custom_id"} for line in lines]
    started = time.perf_counter()
    for fields in jobs:
        client.submit(**fields)
    return {"jobs": len(jobs), "seconds": time.perf_counter() - started}


def main(argv: list[str]) -> int:
    imports_kib = status_kib("VmRSS")
    mode, path = argv[0], Path(argv[1])
    with Client(Settings()) as client:
        client.workers()  # connected before the clock starts, as a long-lived producer is
        ready_kib = status_kib("VmRSS")
        if mode == "batch":
            outcome = submit_batch(client, path)
        else:
            outcome = submit_singly(client, path, int(argv[2]))
    outcome |= {
        "imports_kib": imports_kib,
        "ready_kib": ready_kib,
        "peak_kib": status_kib("VmHWM"),
        "maxrss_kib": maxrss_kib(),
    }
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
