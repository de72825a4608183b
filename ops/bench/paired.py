"""The in-process baseline and genq, measured job by job in turn, so that drift in the
machine's speed (a shared 2-core box drifts by tens of percent) weighs on both alike. Each job
starts after a short pause, so that neither runs into the tail of the other (the worker acks
its task and sends Celery events after the done frame is out)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from genq.producer.client import Client
from genq.workers.backends.llama import LlamaBackend
from ops.bench import genq_stream, inprocess
from ops.bench.measure import PathResult, Run
from ops.bench.workload import Workload

SETTLE_S = 0.05


@dataclass(frozen=True)
class Paired:
    baseline: PathResult
    genq: list[genq_stream.JobOutcome]
    baseline_ids: list[int]  # the token ids of one in-process run

    @property
    def genq_result(self) -> PathResult:
        return genq_stream.result(self.genq)

    @property
    def same_tokens(self) -> bool:
        return all(outcome.token_ids == self.baseline_ids for outcome in self.genq)


def measure(
    backend: LlamaBackend, client: Client, workload: Workload, jobs: int, warmup: int
) -> Paired:
    """`warmup` unmeasured jobs on each path first (the worker loads the model on its first).
    The in-process path chunks as the stack's workers do (the client's settings)."""
    settings = client.settings
    for _ in range(warmup):
        inprocess.run_once(backend, workload, settings)
        genq_stream.run_once(client, workload)
    runs: list[Run] = []
    outcomes: list[genq_stream.JobOutcome] = []
    ids: list[int] = []
    for _ in range(jobs):
        time.sleep(SETTLE_S)
        run, ids = inprocess.run_once(backend, workload, settings)
        runs.append(run)
        time.sleep(SETTLE_S)
        outcomes.append(genq_stream.run_once(client, workload))
    return Paired(PathResult(inprocess.NAME, runs), outcomes, ids)
