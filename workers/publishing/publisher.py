"""Publishing one job attempt's frames on its channel, numbered by `seq`.

Round trips are what short jobs pay for, so frames that need no round trip of their own wait
for the next one: a window's `continuation` goes out with its first token chunk, and the last
window's last chunk and `window` frame with the job's final record (see `pending`). Every
other token chunk also learns, in its round trip, whether the job's cancel was asked for.

Checkpoints catch up after a relay outage. The relay appends window k only as checkpoint entry
k, so one window frame published while no relay ran would block every later one. While a
window it published is not yet checkpointed, each round trip also reads the checkpoint's
length; a window still missing CATCH_UP_AFTER_S after it was published was lost, and the
missing windows are sent again, in order, as checkpoint-only window frames (seq 0: the relay
checkpoints them and streams nothing, so readers see no duplicate), at most once every
CATCH_UP_AFTER_S and only while a subscriber hears the channel. The relay stays the only
checkpoint writer, and its epoch fence holds for these frames as for any.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

import redis

from genq.common.frames import (
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
from genq.common.keys import Keys
from genq.common.schemas import JobResult
from genq.common.store import jobs, presence, queue, streams
from genq.workers.celery.handoff import DRAINING, HandOff
from genq.workers.celery.lease import Lease
from genq.workers.publishing.observe import NOBODY, JobObserver
from genq.workers.publishing.outbox import Outbox

F = TypeVar("F", bound=Frame)
CATCH_UP_AFTER_S = 1.0  # a window published this long ago and not checkpointed was lost


class FramePublisher:
    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        job_id: str,
        epoch: int,
        outbox: Outbox,
        lease: Lease | None = None,
        observer: JobObserver = NOBODY,
        worker: str = "",
    ) -> None:
        self._redis = client
        self.outbox = outbox  # other jobs' endings, which ride along on this job's round trips
        self.observer = observer
        self._lease = lease
        self._cancel_asked = jobs.cancel_requested(keys, job_id)
        # The worker's shutdown (genq.workers.celery.handoff), learnt with the cancel.
        self._draining = presence.draining(keys, worker) if worker else None
        self.cancelled = False
        self.channel = keys.tokens(job_id)
        self.job_id = job_id
        self.epoch = epoch
        self._seq = 1  # stream entry ids are `<epoch>-<seq>`, and Redis refuses 0-0
        self._pending: list[str] = []
        self.first_token_ms: int | None = None
        self._checkpoint_length = streams.checkpointed(keys, job_id)
        # Windows published and not yet seen checkpointed: number -> (data, when published).
        self._unconfirmed: dict[int, tuple[WindowData, float]] = {}
        self._next_catch_up = 0.0

    def _frame(self, kind: type[F], data: Any) -> F:
        """The next frame of this attempt. Also where a superseded attempt stops (LeaseLost)."""
        if self._lease is not None:
            self._lease.check()
        seq, self._seq = self._seq, self._seq + 1
        return kind(job_id=self.job_id, epoch=self.epoch, seq=seq, data=data)

    def _publish(self, frame: Frame, check_cancel: bool = False) -> None:
        """Publish the pending frames and this one in one round trip; with `check_cancel`,
        also learn whether the job's cancel was asked for."""
        pipe = self._redis.pipeline(transaction=False)
        settle = self.outbox.attach(pipe) if len(self.outbox) else None
        for raw in self.pending():
            pipe.publish(self.channel, raw)
        pipe.publish(self.channel, frame.model_dump_json())
        heard_at = len(pipe) - 1  # its reply: how many subscribers (relays) received it
        if check_cancel:
            queue(pipe, self._cancel_asked)
            if self._draining is not None:
                queue(pipe, self._draining)
        watching = bool(self._unconfirmed)
        if watching:
            queue(pipe, self._checkpoint_length)
        replies = pipe.execute()
        if settle is not None:
            settle(replies)
        if watching:
            length = self._checkpoint_length.reply(replies[-1:])
            self._checkpointed(length, heard=int(replies[heard_at]) > 0)
        if check_cancel:
            self.cancelled = self._cancel_asked.reply(replies[heard_at + 1 : heard_at + 2])
            drain = self._draining
            if DRAINING.is_set() or (drain and drain.reply(replies[heard_at + 2 : heard_at + 3])):
                raise HandOff(f"job {self.job_id}: the worker is shutting down")

    def _checkpointed(self, length: int, heard: bool) -> None:
        """The checkpoint held `length` windows just now: forget the windows it has, and
        queue the missing ones again when the oldest was lost (see the module's docstring)."""
        for window in [w for w in self._unconfirmed if w < length]:
            del self._unconfirmed[window]
        if not self._unconfirmed or not heard:
            return
        now = time.monotonic()
        oldest = min(self._unconfirmed)
        if now - self._unconfirmed[oldest][1] < CATCH_UP_AFTER_S or now < self._next_catch_up:
            return
        self._next_catch_up = now + CATCH_UP_AFTER_S
        for window in sorted(self._unconfirmed):
            data = self._unconfirmed[window][0]
            self._pending.append(self._checkpoint_frame(data).model_dump_json())

    def _checkpoint_frame(self, data: WindowData) -> WindowFrame:
        """A window sent again for the checkpoint only (seq 0: never a stream entry)."""
        if self._lease is not None:
            self._lease.check()
        return WindowFrame(job_id=self.job_id, epoch=self.epoch, seq=0, data=data)

    def pending(self) -> list[str]:
        """The frames held back for the next round trip, taken: the caller publishes them
        (before the terminal frame, which the final record's script publishes)."""
        frames, self._pending = self._pending, []
        return frames

    def token(self, data: TokenData, ending: bool = False) -> None:
        """A chunk of the job's last window's end (`ending`) waits for the final record:
        there is no generation left for a cancel to stop."""
        frame = self._frame(TokenFrame, data)
        if self.first_token_ms is None:
            self.first_token_ms = frame.ts_ms
        self.observer.tokens(data.count)
        if ending:
            self._pending.append(frame.model_dump_json())
        else:
            self._publish(frame, check_cancel=True)

    def continuation(self, window: int) -> None:
        frame = self._frame(ContinuationFrame, ContinuationData(window=window))
        self._pending.append(frame.model_dump_json())

    def publish_window(self, data: WindowData) -> None:
        """A window that ends the job waits for the final record; any other is published
        at once, so that the relay checkpoints it before the next window is computed."""
        frame = self._frame(WindowFrame, data)
        self.observer.window_ended(data.window, data.tokens_total)
        if data.finish_reason is None:
            self._unconfirmed[data.window] = (data, time.monotonic())
            self._publish(frame)
        else:
            self._pending.append(frame.model_dump_json())

    def resume(self, data: ResumeData) -> None:
        self._publish(self._frame(ResumeFrame, data))

    def done(self, result: JobResult) -> str:
        """The `done` frame as JSON, for the caller to publish with the job's final record."""
        return self._frame(DoneFrame, result).model_dump_json()

    def error(self, code: str, message: str, retryable: bool) -> str:
        data = ErrorData(code=code, message=message, retryable=retryable)
        return self._frame(ErrorFrame, data).model_dump_json()
