"""Redis key and channel names. Per-job keys carry the job id in a hash tag so that one
job's keys share a Redis Cluster slot."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from genq.common.errors import InvalidJob

JOB_ID_BYTES = 16  # 128 random bits: unguessable
BATCH_ID_BYTES = 12  # generated batch ids: 96 random bits
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
BATCH_ID_CHARS = r"[A-Za-z0-9_.-]{1,64}"  # a whole batch id (a pattern's body, no anchors)
_JOB_ID = re.compile(JOB_ID_PATTERN)
_BATCH_ID = re.compile(f"^{BATCH_ID_CHARS}$")


def new_job_id() -> str:
    return secrets.token_hex(JOB_ID_BYTES)


def check_job_id(job_id: str) -> str:
    """Reject anything that is not a genq job id before it becomes part of a key."""
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidJob(f"not a genq job id: {job_id!r} (expected 32 lowercase hex digits)")
    return job_id


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(BATCH_ID_BYTES)}"


def check_batch_id(batch_id: str) -> str:
    """A batch id is chosen by the user (idempotent resubmission) or generated."""
    if not _BATCH_ID.fullmatch(batch_id):
        raise InvalidJob(
            f"not a batch id: {batch_id!r} (1-64 characters of letters, digits, '_', '.', '-')"
        )
    return batch_id


def is_job_id(text: str) -> bool:
    return _JOB_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class Keys:
    prefix: str = "genq"

    def _job(self, job_id: str, suffix: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:{suffix}"

    def tokens(self, job_id: str) -> str:
        """Pub/sub channel of a job's live frames."""
        return self._job(job_id, "tokens")

    def stream(self, job_id: str) -> str:
        return self._job(job_id, "stream")

    def checkpoint(self, job_id: str) -> str:
        return self._job(job_id, "ckpt")

    def job(self, job_id: str) -> str:
        """Hash: spec, state, epoch, attempts, worker, timestamps, result."""
        return self._job(job_id, "job")

    def cancel(self, job_id: str) -> str:
        return self._job(job_id, "cancel")

    def tokens_pattern(self) -> str:
        return f"{self.prefix}:{{*}}:tokens"

    @property
    def leases(self) -> str:
        """Sorted set: job id -> lease deadline (ms) of running jobs."""
        return f"{self.prefix}:leases"

    @property
    def expiries(self) -> str:
        """Sorted set: job id -> expiry (ms) of jobs not started yet that have one."""
        return f"{self.prefix}:expiries"

    # Worker presence keys share one hash tag, so that one MGET reads every record.
    @property
    def workers(self) -> str:
        """Set: node names of the workers that recorded themselves (see `worker`)."""
        return f"{self.prefix}:{{workers}}"

    def worker(self, name: str) -> str:
        """String (a WorkerInfo as JSON) a live worker keeps refreshing; expires when its
        heartbeats stop."""
        return f"{self.prefix}:{{workers}}:{name}"

    def draining(self, name: str) -> str:
        """String set while a worker shuts down: its jobs hand themselves off (celery/handoff)."""
        return f"{self.prefix}:draining:{name}"

    # A batch's keys share the hash tag of its id, as a job's keys do.
    def batch(self, batch_id: str) -> str:
        """Hash: the batch's settings, counts by state and tokens generated."""
        return f"{self.prefix}:batch:{{{batch_id}}}"

    def batch_jobs(self, batch_id: str) -> str:
        """List: the batch's job ids in input order."""
        return f"{self.prefix}:batch:{{{batch_id}}}:jobs"

    def batch_index(self, batch_id: str) -> str:
        """Hash: custom_id -> job id, which makes resubmission idempotent."""
        return f"{self.prefix}:batch:{{{batch_id}}}:ids"

    def batch_ended(self, batch_id: str) -> str:
        """Pub/sub channel: the id of each job of the batch as it ends (FINISH publishes it),
        which wakes the batch's waiters (BatchHandle.wait, results)."""
        return f"{self.prefix}:batch:{{{batch_id}}}:ended"
