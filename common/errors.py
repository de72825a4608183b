"""genq's exceptions, one hierarchy. Foreign errors are translated at the boundary.

GenqError
├── InvalidJob            bad input; permanent; nothing was queued
│   ├── UnknownModel
│   ├── PromptTooLong
│   └── InvalidBatch      a batch file with bad lines; carries every line's reason
├── RegistryError         the model registry file is wrong
│   └── WorkerConfigError a worker cannot serve the models it is asked to (unknown, other
│                         device class, missing file or API key, no GPU)
├── KeyFileError          GENQ_API_KEYS_FILE is wrong (names the line or entry, never a key)
├── QueueFull             a model's queue holds GENQ_MAX_QUEUED jobs (retryable)
├── QuotaExceeded         a submit over its tenant's quota (retryable, after `retry_after_s`)
├── RedisUnavailable      Redis cannot be reached (retryable)
├── RedisNotPrimary       GENQ_REDIS_URL leads to a replica, or names a primary its Sentinels
│                         do not know: found before anything is queued
├── JobFailed             the job ended with an error frame
├── StreamTimeout         no terminal frame within the timeout
├── ResultNotReady        a stream's result read before the stream was consumed
├── InvalidEntry          an entry read back from Redis (a stream entry, a checkpoint entry,
│                         a job record) does not validate; readers skip it and report it
└── WorkerError           raised while a worker runs a job
    ├── ModelLoadError    the model file cannot be loaded (permanent)
    ├── GenerationError   the backend failed mid-job
    ├── RemoteUnavailable a remote model's server failed, retries spent (retryable)
    └── RemoteRejected    a remote model's server refused the request (4xx; permanent)
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_JOB = "invalid_job"
    UNKNOWN_MODEL = "unknown_model"
    PROMPT_TOO_LONG = "prompt_too_long"
    MODEL_LOAD_FAILED = "model_load_failed"
    GENERATION_FAILED = "generation_failed"
    REMOTE_UNAVAILABLE = "remote_unavailable"
    REMOTE_REJECTED = "remote_rejected"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    EXPIRED = "expired"
    NOT_RETAINED = "not_retained"
    QUEUE_FULL = "queue_full"
    QUOTA_EXCEEDED = "quota_exceeded"
    INTERNAL = "internal"


class GenqError(Exception):
    """Base of every genq error. `code` names it on the wire; `retryable` says whether the
    same request could succeed later."""

    code: ErrorCode = ErrorCode.INTERNAL
    retryable: bool = False


class InvalidJob(GenqError, ValueError):
    code = ErrorCode.INVALID_JOB


class UnknownModel(InvalidJob):
    code = ErrorCode.UNKNOWN_MODEL


class PromptTooLong(InvalidJob):
    code = ErrorCode.PROMPT_TOO_LONG


class InvalidBatch(InvalidJob):
    """A batch with bad lines: `rejects` holds (line number, reason) for each of them."""

    def __init__(self, message: str, rejects: list[tuple[int, str]]) -> None:
        super().__init__(message)
        self.rejects = rejects


class RegistryError(GenqError):
    """The model registry file cannot be used; the message names the file and the entry."""


class WorkerConfigError(RegistryError):
    """A worker cannot start as configured: its models are unknown or of another device class,
    a model's file or API key is missing, or a gpu worker has no GPU. Found at start, before
    any job is taken."""


class KeyFileError(GenqError, ValueError):
    """The gateway's keys file (GENQ_API_KEYS_FILE) cannot be used; the message names the line
    or entry, never a key."""


class RedisUnavailable(GenqError, ConnectionError):
    retryable = True


class RedisNotPrimary(GenqError):
    """GENQ_REDIS_URL leads to a replica (which refuses writes), or to Sentinels that monitor
    no primary by the URL's name; the message names what was asked, its password masked."""


class QueueFull(GenqError):
    """A model's queue holds GENQ_MAX_QUEUED waiting jobs: this one was refused, nothing was
    queued; the same request may succeed later."""

    code = ErrorCode.QUEUE_FULL
    retryable = True


class QuotaExceeded(GenqError):
    """A submit over its tenant's quota (its waiting jobs, its tokens per minute): refused,
    nothing queued. `retry_after_s`: when the same submit may pass, as far as is known now.
    The message names the tenant, the limit and the current figure, never a prompt or key."""

    code = ErrorCode.QUOTA_EXCEEDED
    retryable = True

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobFailed(GenqError):
    """A job ended with an `error` frame; carries the worker's code and message."""

    def __init__(self, job_id: str, code: str, message: str, retryable: bool) -> None:
        super().__init__(f"job {job_id} failed ({code}): {message}")
        self.job_id = job_id
        self.error_code = code
        self.error_message = message
        self.retryable = retryable


class StreamTimeout(GenqError, TimeoutError):
    retryable = True


class ResultNotReady(GenqError):
    """A stream's result was read before the stream reached its terminal frame."""


class InvalidEntry(GenqError):
    """What a reader read back from Redis does not validate: anything with write rights on
    Redis can put it there. Readers skip such an entry (counted, and logged with the job and
    entry) rather than stop; the message names where it is, never its content."""


class WorkerError(GenqError):
    code = ErrorCode.GENERATION_FAILED


class ModelLoadError(WorkerError):
    code = ErrorCode.MODEL_LOAD_FAILED


class GenerationError(WorkerError):
    code = ErrorCode.GENERATION_FAILED


class RemoteUnavailable(WorkerError):
    code = ErrorCode.REMOTE_UNAVAILABLE
    retryable = True


class RemoteRejected(WorkerError):
    code = ErrorCode.REMOTE_REJECTED
