"""Job and batch ids: how they are made and what a valid one looks like. An id is checked
before it becomes part of a Redis key (the keys themselves are the store's: common/store/)."""

from __future__ import annotations

import re
import secrets

from genq.common.errors import InvalidJob

JOB_ID_BYTES = 16  # 128 random bits: unguessable
BATCH_ID_BYTES = 12  # generated batch ids: 96 random bits
# The characters of a job id (token_hex's), in the order relay shares split them
# (genq.common.store.streams.channel_pattern).
JOB_ID_ALPHABET = "0123456789abcdef"
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
