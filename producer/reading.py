"""Reading job streams, with no I/O: what the sync and async streams (producer/streams.py) and
`stream_many` share. `StreamCore` is one reading of one job: its position, deadline and
buffered frames, the read to make next, and the fallback to the job's record when its stream
lacks a terminal frame. `Merge` reads several jobs at once, with one XREAD for all of them.
The faces only run the commands these name (see producer/transport.py)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

from genq.common.errors import InvalidEntry, InvalidJob, StreamTimeout
from genq.common.frames import Frame, TokenFrame
from genq.common.keys import Keys
from genq.common.store import Command, jobs
from genq.common.store import streams as stream_store
from genq.common.store.streams import XreadReply
from genq.producer.core import StreamState, parse_entry, parse_record, terminal_from_record

OnChunk = Callable[[TokenFrame], object]

POLL_S = 1.0  # longest single wait for stream entries; then the job's record is consulted
TERMINAL_GRACE_S = 2.0  # record says ended, stream has no terminal frame yet: wait this long
READ_COUNT = 512  # stream entries per read

log = logging.getLogger("genq.client")


class StreamCore:
    """One reading of a job's frames, with no I/O."""

    def __init__(
        self,
        job_id: str,
        keys: Keys,
        started: float,
        from_id: str | None,
        timeout: float | None,
        on_chunk: OnChunk | None = None,
    ) -> None:
        self.state = StreamState(job_id, started=started)
        self.on_chunk = on_chunk
        self.stopping = False  # on_chunk asked to stop; the job's cancel was sent
        self.keys = keys
        self.stream_key = stream_store.stream_key(keys, job_id)
        self.record_fields = jobs.fields(keys, job_id)
        epoch, seq = entry_id(from_id or "0-1")
        # Reading starts at `from_id` inclusive (XREAD returns what follows `last_id`), and a
        # reader that starts mid-stream has not missed what it skipped.
        self.last_id = f"{epoch}-{max(seq - 1, 0)}"
        self.state.epoch, self.state.seq = epoch, max(seq - 1, 0)
        self.set_timeout(timeout)
        self.buffer: deque[Frame] = deque()
        self.ended_seen_at: float | None = None
        self.closed = False
        self.checkpoint_invalid = False

    def set_timeout(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def wait_ms(self) -> int:
        if self.deadline is None:
            return int(POLL_S * 1000)
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StreamTimeout(f"job {self.state.job_id}: no terminal frame within the timeout")
        return max(1, int(min(left, POLL_S) * 1000))

    def read(self) -> Command[XreadReply]:
        """The next read of the stream: what follows the last entry seen, waiting at most
        POLL_S (StreamTimeout once the reader's timeout passed)."""
        return stream_store.read({self.stream_key: self.last_id}, READ_COUNT, self.wait_ms())

    def ended(self) -> bool:
        """Nothing more to give: closed, or the terminal frame came out."""
        return self.closed or (self.state.done and not self.buffer)

    def take(self, response: Any) -> bool:
        """Buffer the frames of an XREAD reply; an entry that is not a valid frame of this job
        is skipped and reported (the hole it leaves is mended as any other)."""
        for _key, entries in response or []:
            for entry_id_, fields in entries:
                self.last_id = entry_id_
                try:
                    self.buffer.append(parse_entry(self.state.job_id, entry_id_, fields))
                except InvalidEntry as exc:
                    self.state.skipped += 1
                    log.warning("skipped a stream entry that does not validate: %s", exc)
        return bool(self.buffer)

    def pop(self) -> Frame | None:
        if not self.buffer:
            return None
        frame = self.buffer.popleft()
        self.state.apply(frame)
        return frame

    def wants_stop(self, frame: Frame) -> bool:
        """True once, when `on_chunk` first returns a true value for a token chunk."""
        if self.stopping or self.on_chunk is None or not isinstance(frame, TokenFrame):
            return False
        self.stopping = bool(self.on_chunk(frame))
        return self.stopping

    def after_idle(self, raw_record: dict[str, str]) -> None:
        """No entries for a while: if the record says the job ended and its terminal frame
        still has not come, end with a frame made from the record."""
        if not raw_record:
            return
        try:
            record = parse_record(self.state.job_id, raw_record)
        except InvalidEntry as exc:  # not written by genq: it tells nothing
            log.warning("%s", exc)
            return
        if not record.state.terminal:
            self.ended_seen_at = None
            return
        now = time.monotonic()
        if self.ended_seen_at is None:
            self.ended_seen_at = now
        elif now - self.ended_seen_at >= TERMINAL_GRACE_S:
            self.buffer.append(terminal_from_record(record, self.state.job_id))

    def mend_read(self) -> Command[list[str]] | None:
        """After a hole in the frames, the read of the checkpointed windows that would mend
        the text, if any would."""
        windows = None if self.checkpoint_invalid else self.state.repair_through
        if not windows:
            return None
        return stream_store.raw_entries(self.keys, self.state.job_id, windows)

    def mend(self, texts: list[str]) -> None:
        """The checkpointed windows a hole waits for, once they are all there."""
        if len(texts) != self.state.repair_through:
            return
        try:
            job_id = self.state.job_id
            self.state.repair("".join(stream_store.parse_entry(job_id, t).text for t in texts))
        except InvalidEntry as exc:  # the done frame's text mends it at the end
            self.checkpoint_invalid = True
            log.warning("job %s: cannot mend from its checkpoint: %s", self.state.job_id, exc)


def entry_id(text: str) -> tuple[int, int]:
    """`EPOCH-SEQ` (or `SEQ`, of the first attempt) as numbers; InvalidJob when malformed."""
    epoch, _, seq = text.partition("-") if "-" in text else ("0", "-", text)
    if not (epoch.isdigit() and seq.isdigit()):
        raise InvalidJob(f"not a stream position: {text!r} (expected EPOCH-SEQ, e.g. 0-12)")
    return int(epoch), int(seq)


class Reading(Protocol):
    """A stream of either face, as Merge sees it: its core."""

    @property
    def core(self) -> StreamCore: ...


H = TypeVar("H")
M = TypeVar("M", bound=Reading)


class Merge(Generic[H, M]):
    """stream_many without I/O, the same for both faces: the streams still open, the frames
    they buffered, and one XREAD over all of them (positions and the shortest wait)."""

    def __init__(self, streams: dict[str, tuple[H, M]]) -> None:
        self.streams = streams
        self._by_key = {stream.core.stream_key: stream for _, stream in streams.values()}

    def ready(self) -> Iterator[tuple[H, M, Frame]]:
        """Each buffered frame, tagged by job (its stream mends the text before it is
        yielded); a stream whose terminal frame came out is then dropped."""
        for job_id, (job, stream) in list(self.streams.items()):
            while (frame := stream.core.pop()) is not None:
                yield job, stream, frame
            if stream.core.state.done:
                del self.streams[job_id]
                del self._by_key[stream.core.stream_key]

    def read(self) -> Command[XreadReply]:
        """One read of every stream still open, waiting at most the shortest wait."""
        positions = {key: stream.core.last_id for key, stream in self._by_key.items()}
        wait_ms = min(stream.core.wait_ms() for stream in self._by_key.values())
        return stream_store.read(positions, READ_COUNT, wait_ms)

    def take(self, response: Any) -> list[StreamCore]:
        """Buffer an XREAD reply; after an empty one, the cores to check against their job's
        record (see StreamCore.after_idle)."""
        for item in response or []:
            self._by_key[str(item[0])].core.take([item])
        return [] if response else [stream.core for stream in self._by_key.values()]
