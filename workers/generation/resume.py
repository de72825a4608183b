"""Where a resumed attempt starts: everything the job's durable stream holds.

The checkpoint holds the job's finished windows. The stream also holds the token frames of
the window that was running when the last attempt ended: every one the relay wrote is
committed too, so a resume recomputes only the prompt's evaluation and the tokens that never
reached the stream (the last chunk or two), not the whole window.

Those frames count only where the stream is certain: the frames after the last window frame,
numbered without a hole, cut back by each later attempt's `resume` frame to what it kept, and
never the last frame an attempt left when that is a chunk. Such a chunk may be the job's
ending one, whose text includes what the end released (a held-back partial character): its
window and `done` frames did not land, so a resumed attempt could not tell, and replaying its
tokens would not give its text. It is computed again instead (at most `chunk_tokens`).
A backend without token ids (a remote model) has no partial window: it resumes from the
last checkpointed window, as it always did.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from genq.common.frames import Frame, ResumeFrame, TokenData, TokenFrame, WindowFrame, parse_frame
from genq.common.schemas import FinishReason, TokenLogprob
from genq.common.store.streams import CheckpointEntry


@dataclass(frozen=True)
class Partial:
    """The stream's tokens of the first window not checkpointed."""

    token_ids: Sequence[int] = ()
    text: str = ""
    logprobs: Sequence[TokenLogprob] = ()

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Committed:
    """Output committed by earlier attempts: where a resumed attempt starts."""

    windows: int = 0
    token_ids: Sequence[int] = ()  # the finished windows'; empty from a backend without ids
    text: str = ""  # the finished windows' released text
    tokens: int = 0  # the finished windows' tokens
    finish_reason: FinishReason | None = None  # the job ended in the last committed window
    logprobs: Sequence[TokenLogprob] | None = None  # the committed windows', when asked for
    partial: Partial = field(default_factory=Partial)

    @property
    def all_token_ids(self) -> list[int]:
        return [*self.token_ids, *self.partial.token_ids]

    @property
    def total_tokens(self) -> int:
        return self.tokens + self.partial.tokens

    @property
    def total_chars(self) -> int:
        return len(self.text) + len(self.partial.text)


def committed(
    entries: Sequence[CheckpointEntry], stream: Iterable[tuple[str, str]], job_id: str
) -> Committed:
    """The resume point of a job from its checkpoint entries and its stream's entries
    ((entry id, frame) in order)."""
    logprobs = None
    if all(entry.logprobs is not None for entry in entries):
        logprobs = [lp for entry in entries for lp in entry.logprobs or []]
    finish = entries[-1].finish_reason if entries else None
    partial = Partial()
    if finish is None:
        partial = _partial(_frames(stream, job_id), entries)
    return Committed(
        windows=len(entries),
        token_ids=[t for entry in entries for t in entry.token_ids],
        text="".join(entry.text for entry in entries),
        tokens=sum(entry.count for entry in entries),
        finish_reason=finish,
        logprobs=logprobs,
        partial=partial,
    )


def _frames(stream: Iterable[tuple[str, str]], job_id: str) -> Iterable[Frame | None]:
    """The stream's frames; None for an entry that is not a frame of this job at its id
    (a hole: what it held is unknown)."""
    for entry_id, raw in stream:
        try:
            frame = parse_frame(raw)
        except ValidationError:
            yield None
            continue
        ok = frame.job_id == job_id and f"{frame.epoch}-{frame.seq}" == entry_id
        yield frame if ok else None


@dataclass
class _Fold:
    """The stream read in order: the token chunks after the last window frame."""

    windows: int = 0
    chunks: list[TokenData] = field(default_factory=list)
    certain: bool = True  # no hole since the last window frame
    tail: bool = False  # the last frame read is a chunk kept in `chunks`
    epoch: int = -1
    seq: int = 0

    def apply(self, frame: Frame | None, entries: Sequence[CheckpointEntry]) -> None:
        if frame is None or not self._in_order(frame):
            self.certain = False
        if frame is None:
            return
        self.epoch, self.seq = frame.epoch, frame.seq
        if isinstance(frame, WindowFrame):
            self.windows, self.chunks, self.certain = frame.data.window + 1, [], True
        elif isinstance(frame, ResumeFrame):
            self._resume(frame, entries)
        elif isinstance(frame, TokenFrame) and self.certain:
            self.chunks.append(frame.data)
        self.tail = isinstance(frame, TokenFrame) and self.certain

    def _in_order(self, frame: Frame) -> bool:
        if frame.epoch == self.epoch:
            return frame.seq == self.seq + 1
        return frame.epoch > self.epoch and frame.seq == 1

    def _resume(self, frame: ResumeFrame, entries: Sequence[CheckpointEntry]) -> None:
        """A later attempt kept the chunks up to `committed_tokens` (whole chunks always:
        it resumed from what it read here)."""
        data = frame.data
        self.windows = data.from_window
        keep = data.committed_tokens - sum(entry.count for entry in entries[: data.from_window])
        kept: list[TokenData] = []
        for chunk in self.chunks:
            if keep <= 0:
                break
            kept.append(chunk)
            keep -= chunk.count
        # Kept whole: the new attempt's frames follow them. Otherwise what it kept is not
        # here (a hole): nothing of this window counts until its window frame.
        self.certain = keep == 0
        self.chunks = kept if self.certain else []


def _partial(frames: Iterable[Frame | None], entries: Sequence[CheckpointEntry]) -> Partial:
    fold = _Fold()
    for frame in frames:
        fold.apply(frame, entries)
    usable = fold.certain and fold.windows == len(entries)
    if not usable or any(chunk.tokens is not None for chunk in fold.chunks):
        return Partial()  # a hole, a checkpoint behind its stream, or no token ids (remote)
    chunks = fold.chunks[:-1] if fold.tail else fold.chunks
    return Partial(
        token_ids=[t for chunk in chunks for t in chunk.token_ids],
        text="".join(chunk.text for chunk in chunks),
        logprobs=[lp for chunk in chunks for lp in chunk.logprobs or []],
    )
