"""Redis key and channel names. Per-job keys carry the job id in a hash tag so that one
job's keys share a Redis Cluster slot."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from common.errors import InvalidJob

JOB_ID_BYTES = 16  # 128 random bits: unguessable
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def new_job_id() -> str:
    return secrets.token_hex(JOB_ID_BYTES)


def check_job_id(job_id: str) -> str:
    """Reject anything that is not a genq job id before it becomes part of a key."""
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidJob(f"not a genq job id: {job_id!r} (expected 32 lowercase hex digits)")
    return job_id


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
        return f"{self.prefix}:leases"

    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"
