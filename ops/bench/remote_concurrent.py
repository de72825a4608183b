"""The remote section's concurrent measurement: many jobs at once through ONE worker process
with as many slots (its remote backend streams them side by side), against as many direct SSE
clients (threads) of the same server at once. Aggregate tok/s: all jobs' tokens over the wall
from the first request or submit to the last job's end. llama_cpp.server as the benchmark
starts it serves concurrent requests one at a time (interrupt_requests=false), so both paths
queue on the same server: what this measures is what genq adds to a busy server, not the
server's parallelism.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from genq import Client
from genq.common.frames import DoneFrame, ErrorFrame, TokenFrame
from ops.bench.paths import STREAM_TIMEOUT_S, BenchJobFailed
from ops.bench.report import Workload, met, say

TARGET_RATIO = 0.9  # genq aggregate tok/s over the direct clients', at least (median)
SETTLE_S = 0.2  # between passes


@dataclass(frozen=True)
class Burst:
    """One path's jobs started at once; `wall_s` from the first request or submit to the end
    of the last; `tokens` per job."""

    tokens: list[int]
    wall_s: float

    @property
    def tokens_per_s(self) -> float:
        return sum(self.tokens) / self.wall_s


@dataclass(frozen=True)
class BurstRound:
    direct: Burst
    genq: Burst

    @property
    def ratio(self) -> float:
        return self.genq.tokens_per_s / self.direct.tokens_per_s


def direct_burst(one: Callable[[], int], jobs: int) -> Burst:
    """`jobs` threads each streaming one job directly (`one` returns its token count)."""
    with ThreadPoolExecutor(jobs) as pool:
        started = time.perf_counter()
        futures = [pool.submit(one) for _ in range(jobs)]
        tokens = [future.result() for future in futures]
        return Burst(tokens, time.perf_counter() - started)


def genq_burst(client: Client, workload: Workload, jobs: int) -> Burst:
    """`jobs` jobs submitted one after another, each stream read by a thread of its own."""
    with ThreadPoolExecutor(jobs) as pool:
        started = time.perf_counter()
        ids = [client.submit(workload.spec).job_id for _ in range(jobs)]
        futures = [pool.submit(_read, client, job_id) for job_id in ids]
        tokens = [future.result() for future in futures]
        return Burst(tokens, time.perf_counter() - started)


def _read(client: Client, job_id: str) -> int:
    """The job's tokens, by its token frames' counts (a remote model's carry no ids)."""
    tokens, done = 0, False
    for frame in client.job(job_id).stream(timeout=STREAM_TIMEOUT_S):
        if isinstance(frame, TokenFrame):
            tokens += frame.data.count
        elif isinstance(frame, ErrorFrame):
            raise BenchJobFailed(f"job {job_id}: {frame.data.code}: {frame.data.message}")
        elif isinstance(frame, DoneFrame):
            done = True
    if not done:
        raise BenchJobFailed(f"job {job_id}: its stream ended without a done frame")
    return tokens


def rounds(direct: Callable[[], Burst], genq: Callable[[], Burst], count: int) -> list[BurstRound]:
    """`count` rounds of both bursts, direct first in odd rounds and genq first in even ones."""
    done = []
    for n in range(count):
        time.sleep(SETTLE_S)
        first = direct() if n % 2 == 0 else genq()
        time.sleep(SETTLE_S)
        second = genq() if n % 2 == 0 else direct()
        done.append(BurstRound(first, second) if n % 2 == 0 else BurstRound(second, first))
        say(_round_line(n + 1, done[-1]))
    return done


def _round_line(n: int, result: BurstRound) -> str:
    direct, genq = result.direct, result.genq
    return (
        f"  round {n}: direct {direct.tokens_per_s:,.0f} tok/s ({direct.wall_s:.2f} s), genq "
        f"{genq.tokens_per_s:,.0f} tok/s ({genq.wall_s:.2f} s), genq / direct {result.ratio:.3f}"
    )


def summary(done: list[BurstRound], jobs: int, tokens: int) -> list[str]:
    ratio = statistics.median(r.ratio for r in done)
    counts = [count for r in done for count in r.genq.tokens]
    exact = sum(1 for count in counts if count == tokens)
    rows = [
        (f"{jobs} direct SSE clients (threads)", [r.direct for r in done]),
        (f"genq, 1 worker process, --slots {jobs}", [r.genq for r in done]),
    ]
    width = max(len(label) for label, _ in rows)
    return [
        f"{jobs} concurrent jobs of {tokens} tokens per path; medians over {len(done)} rounds:",
        f"  {'path':<{width}}  aggregate tok/s  wall s",
        *(
            f"  {label:<{width}}  {statistics.median(b.tokens_per_s for b in bursts):>15,.0f}"
            f"  {statistics.median(b.wall_s for b in bursts):>6.2f}"
            for label, bursts in rows
        ),
        f"genq jobs with exactly {tokens} tokens: {exact}/{len(counts)} "
        f"({met(exact == len(counts))})",
        f"concurrent genq / direct aggregate tok/s: median {ratio:.3f} (range "
        f"{min(r.ratio for r in done):.3f}..{max(r.ratio for r in done):.3f}; target >= "
        f"{TARGET_RATIO:.2f}: {met(ratio >= TARGET_RATIO)})",
    ]
