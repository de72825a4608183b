"""Celery tasks. A task message carries only job ids and epochs (a job lives in Redis): one
job, or a bundle of short jobs of one batch."""

from __future__ import annotations

import gc
from typing import Any

from celery import Task

from common.celery_config import BUNDLE_TASK, GENERATE_TASK
from common.errors import GenqError
from common.schemas import BundleRequest, GenerateRequest
from workers.app import GenqCelery, app
from workers.jobs import WorkerContext, run_jobs
from workers.metrics import WorkerMetrics


class GenqTask(Task):  # type: ignore[misc]
    """Holds the worker process's context. Celery makes one task instance per process, and
    the context is built on first use, after the pool has forked."""

    _context: WorkerContext | None = None

    @property
    def context(self) -> WorkerContext:
        if self._context is None:
            genq_app: GenqCelery = self.app
            settings = genq_app.genq_settings
            self._context = WorkerContext.from_settings(settings)
            if settings.metrics_port:
                self._context.observers.append(WorkerMetrics(settings.device).observer)
            # Celery's and kombu's objects live as long as the process: taken out of the
            # garbage collector's scans, which otherwise cost a short job about 1 ms of its
            # 4 (measured with the overhead benchmark).
            gc.freeze()
        return self._context


_OPTIONS: dict[str, Any] = {
    "base": GenqTask,
    "bind": True,
    "pydantic": True,
    "ignore_result": True,
    "throws": (GenqError,),  # expected failures: logged without a traceback
}


@app.task(name=GENERATE_TASK, **_OPTIONS)  # type: ignore[untyped-decorator]
def generate(self: GenqTask, request: GenerateRequest) -> None:
    run_jobs(self.context, [request], worker=self.request.hostname or "unknown")


@app.task(name=BUNDLE_TASK, **_OPTIONS)  # type: ignore[untyped-decorator]
def generate_bundle(self: GenqTask, bundle: BundleRequest) -> None:
    run_jobs(self.context, bundle.jobs, worker=self.request.hostname or "unknown")
