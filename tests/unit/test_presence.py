"""genq.common.presence: which running workers serve a queue, and what a waiting job lacks."""

from __future__ import annotations

import pytest

from genq.common.presence import serving_queue, waiting_reason
from genq.common.schemas import JobRecord, JobSpec, JobState, WorkerInfo


def worker(name: str, *queues: str, device: str = "cpu") -> WorkerInfo:
    return WorkerInfo.model_validate(
        {
            "name": name,
            "device": device,
            "models": [q.partition(".")[2] for q in queues],
            "queues": list(queues),
            "pid": 1,
            "started_ms": 1,
            "heartbeat_ms": 2,
            "heartbeat_interval_s": 5.0,
        }
    )


def queued(model: str, queue: str, state: JobState = JobState.QUEUED) -> JobRecord:
    return JobRecord(
        spec=JobSpec(prompt="x", model=model), state=state, queue=queue, submitted_ms=1
    )


A = worker("a@h", "cpu.one")
AB = worker("ab@h", "cpu.one", "cpu.two")


def test_serving_queue_lists_the_workers_that_consume_it() -> None:
    assert serving_queue([A, AB], "cpu.one") == [A, AB]
    assert serving_queue([A, AB], "cpu.two") == [AB]
    assert serving_queue([A, AB], "gpu.one") == []


def test_a_queued_job_no_worker_serves_says_which_worker_to_start() -> None:
    assert waiting_reason(queued("two", "cpu.two"), [A]) == (
        "no running worker serves model two (queue cpu.two); start one with: "
        "genq worker --models two"
    )


def test_a_gpu_jobs_reason_names_the_gpu_worker() -> None:
    reason = waiting_reason(queued("big", "gpu.big"), [])
    assert reason is not None and reason.endswith("genq worker --models big --device gpu")


@pytest.mark.parametrize(
    ("record", "workers"),
    [
        (queued("two", "cpu.two"), [AB]),  # served: it waits its turn
        (queued("two", "cpu.two", JobState.RUNNING), []),
        (queued("two", "cpu.two", JobState.SUCCEEDED), []),
    ],
    ids=["served", "running", "ended"],
)
def test_no_reason_for_a_served_running_or_ended_job(
    record: JobRecord, workers: list[WorkerInfo]
) -> None:
    assert waiting_reason(record, workers) is None
