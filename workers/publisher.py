"""Publishing one job attempt's frames on its channel, numbered by `seq`."""

from __future__ import annotations

import time

import redis

from common.frames import (
    ContinuationData,
    ContinuationFrame,
    DoneFrame,
    ErrorData,
    ErrorFrame,
    ResumeData,
    ResumeFrame,
    TokenData,
    TokenFrame,
    WindowData,
    WindowFrame,
)
from common.keys import Keys
from common.schemas import JobResult
from workers.lease import Lease


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FramePublisher:
    def __init__(
        self, client: redis.Redis, keys: Keys, job_id: str, epoch: int, lease: Lease | None = None
    ) -> None:
        self._redis = client
        self._lease = lease
        self.channel = keys.tokens(job_id)
        self.job_id = job_id
        self.epoch = epoch
        self._seq = 1  # stream entry ids are `<epoch>-<seq>`, and Redis refuses 0-0
        self.first_token_ms: int | None = None

    def _next_seq(self) -> int:
        """Also the point where a superseded attempt stops (LeaseLost)."""
        if self._lease is not None:
            self._lease.check()
        seq, self._seq = self._seq, self._seq + 1
        return seq

    def token(self, data: TokenData) -> None:
        frame = TokenFrame(job_id=self.job_id, epoch=self.epoch, seq=self._next_seq(), data=data)
        if self.first_token_ms is None:
            self.first_token_ms = frame.ts_ms
        self._redis.publish(self.channel, frame.model_dump_json())

    def continuation(self, window: int) -> None:
        data = ContinuationData(window=window)
        frame = ContinuationFrame(
            job_id=self.job_id, epoch=self.epoch, seq=self._next_seq(), data=data
        )
        self._redis.publish(self.channel, frame.model_dump_json())

    def window(self, data: WindowData) -> None:
        frame = WindowFrame(job_id=self.job_id, epoch=self.epoch, seq=self._next_seq(), data=data)
        self._redis.publish(self.channel, frame.model_dump_json())

    def resume(self, data: ResumeData) -> None:
        frame = ResumeFrame(job_id=self.job_id, epoch=self.epoch, seq=self._next_seq(), data=data)
        self._redis.publish(self.channel, frame.model_dump_json())

    def done(self, result: JobResult) -> str:
        """The `done` frame as JSON, for the caller to publish with the job's final record."""
        frame = DoneFrame(job_id=self.job_id, epoch=self.epoch, seq=self._next_seq(), data=result)
        return frame.model_dump_json()

    def error(self, code: str, message: str, retryable: bool) -> str:
        data = ErrorData(code=code, message=message, retryable=retryable)
        frame = ErrorFrame(job_id=self.job_id, epoch=self.epoch, seq=self._next_seq(), data=data)
        return frame.model_dump_json()
