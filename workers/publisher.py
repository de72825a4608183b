"""Publishing one job attempt's frames on its channel, numbered by `seq`."""

from __future__ import annotations

import time

import redis

from common.frames import DoneFrame, ErrorData, ErrorFrame, TokenData, TokenFrame
from common.keys import Keys
from common.schemas import JobResult


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FramePublisher:
    def __init__(self, client: redis.Redis, keys: Keys, job_id: str, epoch: int) -> None:
        self._redis = client
        self.channel = keys.tokens(job_id)
        self.job_id = job_id
        self.epoch = epoch
        self._seq = 0
        self.first_token_ms: int | None = None

    def _next_seq(self) -> int:
        seq, self._seq = self._seq, self._seq + 1
        return seq

    def token(self, data: TokenData) -> None:
        frame = TokenFrame(job_id=self.job_id, epoch=self.epoch, seq=self._next_seq(), data=data)
        if self.first_token_ms is None:
            self.first_token_ms = frame.ts_ms
        self._redis.publish(self.channel, frame.model_dump_json())

    def done(self, result: JobResult) -> str:
        """The `done` frame as JSON, for the caller to publish with the job's final record."""
        frame = DoneFrame(job_id=self.job_id, epoch=self.epoch, seq=self._next_seq(), data=result)
        return frame.model_dump_json()

    def error(self, code: str, message: str, retryable: bool) -> str:
        data = ErrorData(code=code, message=message, retryable=retryable)
        frame = ErrorFrame(job_id=self.job_id, epoch=self.epoch, seq=self._next_seq(), data=data)
        return frame.model_dump_json()
