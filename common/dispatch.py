"""Sending generate tasks to the broker: producers send new jobs, the relay requeues jobs whose
worker died. Many at once go out pipelined (kombu's publish batch), which is what lets a large
batch be accepted at thousands of jobs a second."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from genq.common.celery_config import BUNDLE_TASK, GENERATE_TASK, make_celery
from genq.common.schemas import PRIORITY_MAX, BundleRequest, GenerateRequest
from genq.common.settings import Settings

PUBLISH_BATCH = 500  # broker commands per pipelined flush


@dataclass(frozen=True)
class Dispatch:
    """One task message: a job, or a bundle of short jobs of one batch."""

    request: GenerateRequest | BundleRequest
    queue: str
    priority: int
    model: str
    tenant: str = ""  # whose job it is, for Flower (a ticket may run another's: progress.py)

    @property
    def task(self) -> str:
        return BUNDLE_TASK if isinstance(self.request, BundleRequest) else GENERATE_TASK

    @property
    def argsrepr(self) -> str:
        """What Flower shows as the task's arguments: never the prompt."""
        if isinstance(self.request, BundleRequest):
            jobs = self.request.jobs
            r, count = jobs[0], f"jobs={len(jobs)} first="
        else:
            r, count = self.request, "job="
        batch = f" batch={r.batch_id}" if r.batch_id else ""
        tenant = f" tenant={self.tenant}" if self.tenant else ""
        return f"{count}{r.job_id} epoch={r.epoch} model={self.model}{batch}{tenant}"


def broker_priority(priority: int) -> int:
    """genq's 9 is the most urgent; kombu's Redis transport serves priority 0 first."""
    return PRIORITY_MAX - priority


class Dispatcher:
    def __init__(self, settings: Settings, main: str) -> None:
        self._celery = make_celery(settings, main=main)

    def send(self, jobs: Iterable[Dispatch]) -> int:
        """Publish the jobs' task messages; returns how many. Raises kombu's or redis-py's
        connection errors as they are: callers translate them."""
        sent = 0
        with self._celery.producer_or_acquire() as producer, _batch(producer):
            for job in jobs:
                self._celery.send_task(
                    job.task,
                    args=[job.request.model_dump(mode="json")],
                    queue=job.queue,
                    task_id=job.request.task_id,
                    priority=broker_priority(job.priority),
                    producer=producer,
                    argsrepr=job.argsrepr,
                    kwargsrepr="{}",
                    ignore_result=True,
                )
                sent += 1
        return sent


def _batch(producer: Any) -> contextlib.AbstractContextManager[Any]:
    batch = getattr(producer, "batch", None)
    return batch(PUBLISH_BATCH) if batch is not None else contextlib.nullcontext()
