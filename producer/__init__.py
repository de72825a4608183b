"""genq's client side: submit generation jobs and stream their tokens.

from producer import Client
with Client() as client:
    job = client.submit("Once upon a time", max_tokens=64)
    print(job.result().text)
"""

from common.errors import (
    GenqError,
    InvalidBatch,
    InvalidEntry,
    InvalidJob,
    JobFailed,
    PromptTooLong,
    RedisUnavailable,
    StreamTimeout,
    UnknownModel,
)
from common.frames import Frame, FrameType
from common.schemas import (
    BatchStatus,
    ChatMessage,
    FinishReason,
    JobRecord,
    JobResult,
    JobSpec,
    JobState,
    ResultLine,
    WorkerInfo,
)
from common.settings import Settings
from producer.batches import AsyncBatchHandle, BatchHandle
from producer.batchfile import Reject
from producer.client import STOP, AsyncClient, AsyncJobHandle, Client, JobHandle
from producer.core import StreamStats
from producer.submitter import CancelReport

__all__ = [
    "STOP",
    "AsyncBatchHandle",
    "AsyncClient",
    "AsyncJobHandle",
    "BatchHandle",
    "BatchStatus",
    "CancelReport",
    "ChatMessage",
    "Client",
    "FinishReason",
    "Frame",
    "FrameType",
    "GenqError",
    "InvalidBatch",
    "InvalidEntry",
    "InvalidJob",
    "JobFailed",
    "JobHandle",
    "JobRecord",
    "JobResult",
    "JobSpec",
    "JobState",
    "PromptTooLong",
    "RedisUnavailable",
    "Reject",
    "ResultLine",
    "Settings",
    "StreamStats",
    "StreamTimeout",
    "UnknownModel",
    "WorkerInfo",
]
