"""genq's worker image runs jobs end to end against a Redis container, and keeps doing so
when its container is restarted or killed mid-job."""

from __future__ import annotations

from typing import Any

import pytest

from genq import Client
from genq.common.frames import DoneFrame, Frame, ResumeFrame, TokenFrame, WindowFrame
from ops.localstack import wait_for

pytestmark = pytest.mark.smoke

# Eighty windows of the tiny model: long enough to kill its worker in the middle.
LONG_JOB: dict[str, Any] = {
    "max_tokens": 8000,
    "window_tokens": 100,
    "seed": 11,
    "ignore_eos": True,
}


def worker_names(client: Client) -> set[str]:
    return {info.name for info in client.workers()}


def run_short_job(client: Client) -> list[Frame]:
    job = client.submit("smoke", max_tokens=24, window_tokens=8, seed=3, ignore_eos=True)
    frames = list(job.stream(timeout=120))
    result = job.result()
    assert isinstance(frames[-1], DoneFrame)
    assert result.usage.completion_tokens == 24
    assert "".join(f.data.text for f in frames if isinstance(f, TokenFrame)) == result.text
    assert sum(isinstance(f, WindowFrame) for f in frames) == 3
    return frames


def test_worker_image_runs_a_job_end_to_end(celery_setup: Any, client: Client) -> None:
    # The worker records itself under the node name pytest-celery knows it by.
    expected = celery_setup.worker.hostname()
    wait_for(lambda: worker_names(client) == {expected}, 60, f"worker {expected} to record itself")
    run_short_job(client)


def test_restarted_worker_container_runs_jobs_again(celery_setup: Any, client: Client) -> None:
    run_short_job(client)
    celery_setup.worker.restart()  # SIGTERM: Celery's warm shutdown, then a fresh start
    wait_for(lambda: bool(worker_names(client)), 120, "the restarted worker to record itself")
    run_short_job(client)


def test_job_resumes_after_its_worker_container_is_killed(
    celery_setup: Any, client: Client
) -> None:
    job = client.submit("resume", **LONG_JOB)
    killed = False
    frames = []
    for frame in job.stream(timeout=300):
        frames.append(frame)
        if isinstance(frame, WindowFrame) and not killed:
            celery_setup.worker.kill()  # SIGKILL mid-job, after a checkpoint
            celery_setup.worker.restart()
            killed = True
    resumed = job.result()
    assert any(isinstance(f, ResumeFrame) for f in frames)
    assert resumed.usage.completion_tokens == LONG_JOB["max_tokens"]

    # A resumed job yields exactly the tokens of an uninterrupted run (same image, same host).
    again = client.submit("resume", **LONG_JOB).result(timeout=300)
    assert resumed.text == again.text
