"""Celery tasks. A task message carries only job ids and epochs (a job lives in Redis): one
job, or a bundle of short jobs of one batch. A task returns a one-line summary, which Flower
shows as its result (there is no result backend), and reports progress to Flower as it runs
(genq.workers.celery.progress)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Sequence
from typing import Any

from celery import Task
from celery.exceptions import Reject

from genq.common.celery_config import BUNDLE_TASK, GENERATE_TASK
from genq.common.errors import GenqError
from genq.common.schemas import BundleRequest, GenerateRequest
from genq.workers.app import GenqCelery, app
from genq.workers.celery.admission import Admission
from genq.workers.celery.handoff import DRAINING
from genq.workers.celery.jobs import WorkerContext, run_jobs
from genq.workers.celery.progress import TaskProgress
from genq.workers.publishing.metrics import WorkerMetrics


class GenqTask(Task):  # type: ignore[misc]
    """Holds the worker process's context, built on first use, after the pool has forked.
    It is kept on this class, not on a task: each task (one job, a bundle) is a class of its
    own, and a process running both must still load each model once and keep one set of
    metrics (two would overwrite each other's values in the shared metric files)."""

    _context: WorkerContext | None = None
    _making = threading.Lock()  # a worker with slots runs tasks in threads

    @property
    def context(self) -> WorkerContext:
        with GenqTask._making:
            return self._make_context()

    def _make_context(self) -> WorkerContext:
        if GenqTask._context is None:
            genq_app: GenqCelery = self.app
            settings = genq_app.genq_settings
            context = WorkerContext.from_settings(settings)
            if settings.metrics_port:
                context.observers.append(WorkerMetrics(settings.device).observer)
            GenqTask._context = context
            # Celery's and kombu's objects live as long as the process: taken out of the
            # garbage collector's scans, which otherwise cost a short job about 1 ms of its
            # 4 (measured with the overhead benchmark).
            gc.freeze()
        return GenqTask._context

    def run_requests(self, requests: Sequence[GenerateRequest]) -> str:
        """Run a message's jobs; their summary, for Flower. (Celery's `run` is the task body.)"""
        if DRAINING.is_set():
            # A message that reached this worker as it shuts down (a job it just handed off,
            # say) goes back to its queue as it is, for another worker, not run and handed
            # off again at a new epoch.
            raise Reject("the worker is shutting down", requeue=True)
        genq_app: GenqCelery = self.app
        admission = genq_app.genq_admission or Admission({})
        queue = (self.request.delivery_info or {}).get("routing_key")
        if not admission.reserve(queue):
            # Its model is full here (the message came in as the last slot was taken): back
            # to its queue as it is, for the next free slot of any worker (admission).
            raise Reject(f"every slot of {queue} is taken", requeue=True)
        try:
            return self._run(requests)
        finally:
            admission.release(queue)

    def _run(self, requests: Sequence[GenerateRequest]) -> str:
        ctx = self.context
        progress = TaskProgress(self.send_event, ctx.settings.progress_interval_s)
        worker = self.request.hostname or "unknown"
        run_jobs(ctx, requests, worker=worker, observers=[progress.observe])
        return progress.summary(requests)


_OPTIONS: dict[str, Any] = {
    "base": GenqTask,
    "bind": True,
    "pydantic": True,
    "ignore_result": True,
    "throws": (GenqError,),  # expected failures: logged without a traceback
}


@app.task(name=GENERATE_TASK, **_OPTIONS)  # type: ignore[untyped-decorator]
def generate(self: GenqTask, request: GenerateRequest) -> str:
    return self.run_requests([request])


@app.task(name=BUNDLE_TASK, **_OPTIONS)  # type: ignore[untyped-decorator]
def generate_bundle(self: GenqTask, bundle: BundleRequest) -> str:
    return self.run_requests(bundle.jobs)
