"""Celery tasks. Each task message carries only a job id and epoch (the job lives in Redis)."""

from __future__ import annotations

from celery import Task

from common.celery_config import GENERATE_TASK
from common.errors import GenqError
from common.schemas import GenerateRequest
from workers.app import GenqCelery, app
from workers.jobs import WorkerContext, run_job


class GenqTask(Task):  # type: ignore[misc]
    """Holds the worker process's context. Celery makes one task instance per process, and
    the context is built on first use, after the pool has forked."""

    _context: WorkerContext | None = None

    @property
    def context(self) -> WorkerContext:
        if self._context is None:
            genq_app: GenqCelery = self.app
            self._context = WorkerContext.from_settings(genq_app.genq_settings)
        return self._context


@app.task(  # type: ignore[untyped-decorator]
    name=GENERATE_TASK,
    base=GenqTask,
    bind=True,
    pydantic=True,
    ignore_result=True,
    throws=(GenqError,),  # expected failures: logged without a traceback
)
def generate(self: GenqTask, request: GenerateRequest) -> None:
    run_job(self.context, request, worker=self.request.hostname or "unknown")
