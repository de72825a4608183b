"""genq: a distributed worker queue for batch and streaming text generation.

The public face is this module's `__all__`:

    from genq import Client
    with Client() as client:
        job = client.submit("Once upon a time", max_tokens=64)
        print(job.result().text)

Where a newcomer starts reading: `producer/client.py` (what a user calls), then
`workers/__init__.py` (the map of a worker process), then `common/store/__init__.py` (Redis).
"""

from genq.common.errors import (
    GenqError,
    InvalidBatch,
    InvalidEntry,
    InvalidJob,
    JobFailed,
    PromptTooLong,
    QueueFull,
    QuotaExceeded,
    RedisUnavailable,
    StreamTimeout,
    UnknownModel,
)
from genq.common.frames import Frame, FrameType
from genq.common.schemas import (
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
from genq.common.settings import Settings
from genq.producer.batches import AsyncBatchHandle, BatchHandle
from genq.producer.batchfile import Reject
from genq.producer.client import STOP, AsyncClient, Client
from genq.producer.core import StreamStats
from genq.producer.handles import AsyncJobHandle, JobHandle
from genq.producer.submitter import CancelReport

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
    "QueueFull",
    "QuotaExceeded",
    "RedisUnavailable",
    "Reject",
    "ResultLine",
    "Settings",
    "StreamStats",
    "StreamTimeout",
    "UnknownModel",
    "WorkerInfo",
]
