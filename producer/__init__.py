"""genq's client side: submit generation jobs and stream their tokens.

from producer import Client
with Client() as client:
    job = client.submit("Once upon a time", max_tokens=64)
    print(job.result().text)
"""

from common.errors import (
    GenqError,
    InvalidJob,
    JobFailed,
    PromptTooLong,
    RedisUnavailable,
    StreamTimeout,
    UnknownModel,
)
from common.frames import Frame, FrameType
from common.schemas import ChatMessage, FinishReason, JobResult, JobSpec
from common.settings import Settings
from producer.client import AsyncClient, AsyncJobHandle, Client, JobHandle
from producer.core import StreamStats

__all__ = [
    "AsyncClient",
    "AsyncJobHandle",
    "ChatMessage",
    "Client",
    "FinishReason",
    "Frame",
    "FrameType",
    "GenqError",
    "InvalidJob",
    "JobFailed",
    "JobHandle",
    "JobResult",
    "JobSpec",
    "PromptTooLong",
    "RedisUnavailable",
    "Settings",
    "StreamStats",
    "StreamTimeout",
    "UnknownModel",
]
