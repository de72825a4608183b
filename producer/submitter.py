"""`Submitter`: what a job goes through on its way in and out of the queue, whoever submits it
(`Client.submit`, a batch's `BatchSubmitter`) or cancels it (a job handle, a batch handle):
checking it against its model, preparing its record, admitting it (its model's ceiling and its
tenant's quotas: producer/quotas.py), sending its task messages, and cancelling it.

Checking and preparing do no I/O; sending blocks on the broker (kombu publishes
synchronously: an async caller runs it in a thread). Cancelling has a sync face (`cancel`) and
an async face (`acancel`) over the same I/O-free plan (`cancel_calls`), on whichever Redis
client the caller holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from genq.common.connection import redis_errors, unavailable
from genq.common.dispatch import Dispatch, Dispatcher
from genq.common.errors import RedisUnavailable
from genq.common.lifecycle import Finish, unstarted_finish
from genq.common.prompts import PromptCounter
from genq.common.registry import ModelRegistry
from genq.common.schemas import JobSpec, JobState
from genq.common.settings import Settings
from genq.common.store import arun_all, replication, run_all
from genq.common.store import jobs as job_store
from genq.common.store.command import Command
from genq.common.store.keys import Keys
from genq.producer.core import Placement, PreparedJob, check_job, parse_spec, prepare_job
from genq.producer.quotas import Admission, Charge, job_cost, model_queues


@dataclass(frozen=True)
class CancelReport:
    not_started: int  # queued jobs ended as cancelled
    signalled: int  # running jobs told to stop (they end `cancelled` within a chunk)
    already_ended: int

    def __add__(self, other: CancelReport) -> CancelReport:
        return CancelReport(
            self.not_started + other.not_started,
            self.signalled + other.signalled,
            self.already_ended + other.already_ended,
        )

    def settled(self, applied: Sequence[bool]) -> CancelReport:
        """The report once the FINISH calls ran (`applied`: whether each was): a queued job
        that a worker took meanwhile (not applied) was signalled instead, as it sees its
        cancel key."""
        lost = list(applied).count(False)
        return CancelReport(self.not_started - lost, self.signalled + lost, self.already_ended)


class Submitter:
    """Checks, prepares, dispatches and cancels jobs for one client (one broker connection,
    made once: a Celery app is not cheap to build)."""

    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.registry = registry
        self._prompts = PromptCounter(registry)
        self._queues = model_queues(registry)
        self._dispatcher = Dispatcher(settings, main="genq-producer")

    def check(self, spec: JobSpec) -> None:
        """Raises InvalidJob (UnknownModel, PromptTooLong) for a job its model cannot run."""
        check_job(spec, self.settings, self.registry, self._prompts)

    def prepare(
        self,
        prompt: str | JobSpec | None,
        fields: Mapping[str, Any],
        placement: Placement | None = None,
    ) -> PreparedJob:
        """A checked job with its id, seed and record, ready to write; raises InvalidJob."""
        spec = parse_spec(prompt, fields)
        place = placement or Placement()
        return prepare_job(spec, self.settings, self.registry, self._prompts, place)

    def admission(self, job: PreparedJob) -> Admission:
        """The limits one job is held to before it is queued (see producer/quotas.py)."""
        record = job.record
        charge = Charge(record.tenant, 1, job_cost(record.spec), record.queue)
        return Admission(self.settings, self._queues, charge)

    def batch_admission(self, tenant: str, jobs: int, tokens: int) -> Admission:
        """The limits a batch is held to, whole, before its first job is queued."""
        return Admission(self.settings, self._queues, Charge(tenant, jobs, tokens))

    def send(self, dispatches: Iterable[Dispatch]) -> None:
        """Publish task messages; RedisUnavailable when the broker did not take them."""
        try:
            self._dispatcher.send(dispatches)
        except Exception as exc:  # kombu's errors vary by transport; all mean "not queued"
            raise unavailable(self.settings, exc) from exc

    def dispatch(self, job: PreparedJob) -> None:
        """Publish one job's task message (see `send`)."""
        record = job.record
        model = record.spec.model
        self.send([Dispatch(job.request, record.queue, record.priority, model, record.tenant)])

    def replica_wait(self) -> list[Command[Any]]:
        """With GENQ_REDIS_WAIT_REPLICAS, the WAIT to run in one pipeline after a write that
        follows the jobs' task messages (sent on the broker's connection): it covers the
        records and the messages. Without, nothing."""
        settings = self.settings
        if not settings.redis_wait_replicas:
            return []
        return [replication.wait(settings.redis_wait_replicas, settings.redis_wait_ms)]

    def confirm_ops(self, job_ids: Sequence[str]) -> list[Command[Any]]:
        """After a job's task message is sent, with GENQ_REDIS_WAIT_REPLICAS: its record says
        it was dispatched (the write the WAIT follows), and the WAIT. Without, nothing."""
        wait = self.replica_wait()
        return [job_store.mark_dispatched(self.keys, job_ids), *wait] if wait else []

    def replicated(self, job_ids: Sequence[str], replies: Sequence[Any]) -> None:
        """RedisUnavailable when fewer replicas confirmed the jobs than GENQ_REDIS_WAIT_REPLICAS
        asks (the replies of a pipeline ending with `replica_wait`)."""
        wanted = self.settings.redis_wait_replicas
        if wanted and replies[-1] < wanted:
            first = job_ids[0] + (f" and {len(job_ids) - 1} more" if len(job_ids) > 1 else "")
            raise RedisUnavailable(
                f"job {first}: written, but {replies[-1]} of the {wanted} replicas "
                f"GENQ_REDIS_WAIT_REPLICAS asks confirmed it within {self.settings.redis_wait_ms}"
                " ms; a failover now could lose it"
            )

    def cancel(self, client: redis.Redis, job_ids: Sequence[str]) -> CancelReport:
        """Cancel jobs: queued ones never start, running ones stop within a chunk, ended ones
        keep their results. Two round trips, whatever the number of jobs."""
        with redis_errors(self.settings):
            values = run_all(client, self._cancel_ops(job_ids))
            finishes, report = cancel_calls(job_ids, values[len(job_ids) :])
            return report.settled(run_all(client, self._finish_ops(finishes)))

    async def acancel(self, client: redis.asyncio.Redis, job_ids: Sequence[str]) -> CancelReport:
        """The async face of `cancel`."""
        with redis_errors(self.settings):
            values = await arun_all(client, self._cancel_ops(job_ids))
            finishes, report = cancel_calls(job_ids, values[len(job_ids) :])
            return report.settled(await arun_all(client, self._finish_ops(finishes)))

    def _cancel_ops(self, job_ids: Sequence[str]) -> list[Command[Any]]:
        """Set the jobs' cancel keys (running jobs see them at their next chunk), then read
        their records, in one pipeline of either face: the records' values come last."""
        ttl_s = self.settings.job_ttl_s
        cancels = [job_store.request_cancel(self.keys, job_id, ttl_s) for job_id in job_ids]
        return [*cancels, *(job_store.fields(self.keys, job_id) for job_id in job_ids)]

    def _finish_ops(self, finishes: Sequence[Finish]) -> list[Command[Any]]:
        return [finish.command(self.keys, self.settings.job_ttl_s) for finish in finishes]


def cancel_calls(
    job_ids: Sequence[str], records: Sequence[Mapping[str, str]]
) -> tuple[list[Finish], CancelReport]:
    """The FINISH calls that end the never-started jobs among `job_ids` as cancelled, and what
    the cancel does to each job. A job queued again after its worker died is left to the
    worker that claims it, which sees the cancel and ends it with its committed text."""
    finishes = []
    signalled = ended = 0
    for job_id, raw in zip(job_ids, records, strict=True):
        state = raw.get("state")
        if state == JobState.QUEUED and raw.get("epoch") == "0":
            record = job_store.decode(raw)
            finishes.append(unstarted_finish(job_id, record, JobState.CANCELLED, []))
        elif state in {JobState.QUEUED, JobState.RUNNING}:
            signalled += 1
        else:
            ended += 1
    return finishes, CancelReport(len(finishes), signalled, ended)
