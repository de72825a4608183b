"""Publishing one job attempt's frames on its channel, numbered by `seq`."""

from __future__ import annotations

import time
from typing import Any, TypeVar

import redis

from common.frames import (
    ContinuationData,
    ContinuationFrame,
    DoneFrame,
    ErrorData,
    ErrorFrame,
    Frame,
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

F = TypeVar("F", bound=Frame)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FramePublisher:
    def __init__(
        self, client: redis.Redis, keys: Keys, job_id: str, epoch: int, lease: Lease | None = None
    ) -> None:
        self._redis = client
        self._lease = lease
        self._cancel_key = keys.cancel(job_id)
        self.cancelled = False
        self.channel = keys.tokens(job_id)
        self.job_id = job_id
        self.epoch = epoch
        self._seq = 1  # stream entry ids are `<epoch>-<seq>`, and Redis refuses 0-0
        self.first_token_ms: int | None = None

    def _frame(self, kind: type[F], data: Any) -> F:
        """The next frame of this attempt. Also where a superseded attempt stops (LeaseLost)."""
        if self._lease is not None:
            self._lease.check()
        seq, self._seq = self._seq, self._seq + 1
        return kind(job_id=self.job_id, epoch=self.epoch, seq=seq, data=data)

    def _publish(self, frame: Frame) -> None:
        self._redis.publish(self.channel, frame.model_dump_json())

    def _publish_and_check(self, frame: Frame) -> None:
        """Publish, and learn in the same round trip whether the job's cancel was asked for."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.publish(self.channel, frame.model_dump_json())
        pipe.exists(self._cancel_key)
        self.cancelled = bool(pipe.execute()[1])

    def token(self, data: TokenData) -> None:
        frame = self._frame(TokenFrame, data)
        if self.first_token_ms is None:
            self.first_token_ms = frame.ts_ms
        self._publish_and_check(frame)

    def continuation(self, window: int) -> None:
        self._publish_and_check(self._frame(ContinuationFrame, ContinuationData(window=window)))

    def window(self, data: WindowData) -> None:
        self._publish(self._frame(WindowFrame, data))

    def resume(self, data: ResumeData) -> None:
        self._publish(self._frame(ResumeFrame, data))

    def done(self, result: JobResult) -> str:
        """The `done` frame as JSON, for the caller to publish with the job's final record."""
        return self._frame(DoneFrame, result).model_dump_json()

    def error(self, code: str, message: str, retryable: bool) -> str:
        data = ErrorData(code=code, message=message, retryable=retryable)
        return self._frame(ErrorFrame, data).model_dump_json()
