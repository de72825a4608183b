"""Frame protocol v1: every message on a job's token channel is one of these, as JSON.

See ../shared/design.md ("Frames"). `seq` increases strictly within an epoch, from 1: a
frame's stream entry id is `<epoch>-<seq>`. Seq 0 is never a stream entry: a `window` frame
with seq 0 is a window sent again for the checkpoint only (`checkpoint_only`), after a relay
outage lost its first frame; the relay appends it to the checkpoint and nowhere else.

Field order: pydantic writes fields in declaration order, so every frame starts
`{"v":1,"job_id":"…","epoch":…,"seq":…,"ts_ms":…,"type":"…"` (`HEADER_FIELDS`, enforced by
tests/unit/test_frames.py). The relay's correctness does not depend on it (a frame it does
not recognize by its bytes, genq.workers.relay.shape, is validated whole by `parse_frame`), but its
speed does: keep `_Frame`'s fields first, in this order, and `type` and `data` last in each frame
class (tests/unit/test_relay_shape.py fails when token frames stop taking the fast path).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from genq.common.schemas import FinishReason, JobResult, TokenLogprob

PROTOCOL_VERSION: Literal[1] = 1
MAX_ID_PART = 2**63 - 1


class FrameType(StrEnum):
    TOKEN = "token"
    CONTINUATION = "continuation"
    WINDOW = "window"
    RESUME = "resume"
    DONE = "done"
    ERROR = "error"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenData(_Data):
    """A chunk: tokens sampled since the last chunk, and the text that became final with them
    (text is held back while it may still complete a UTF-8 character or a stop sequence).
    A remote model gives no token ids: then `tokens` counts them."""

    text: str
    token_ids: list[int]
    tokens: int | None = Field(None, ge=0, description="Set when token_ids is not given.")
    logprobs: list[TokenLogprob] | None = None

    @property
    def count(self) -> int:
        return len(self.token_ids) if self.tokens is None else self.tokens


class ContinuationData(_Data):
    window: int = Field(ge=0)


class WindowData(_Data):
    """A finished window: its tokens and the text released during it, everything a resume
    needs. `finish_reason` is set when the job ended in this window."""

    window: int = Field(ge=0)
    token_ids: list[int]
    text: str
    tokens: int | None = Field(None, ge=0, description="Set when token_ids is not given.")
    tokens_total: int = Field(ge=0)
    logprobs: list[TokenLogprob] | None = None  # the window's, when the job asked for them
    finish_reason: FinishReason | None = None

    @property
    def count(self) -> int:
        return len(self.token_ids) if self.tokens is None else self.tokens


def window_tokens(entry: Mapping[str, Any]) -> int:
    """Tokens of a window frame's data or checkpoint entry (a remote model's windows count
    them in `tokens`, having no token ids)."""
    tokens = entry.get("tokens")
    return len(entry["token_ids"]) if tokens is None else int(tokens)


class ResumeData(_Data):
    from_window: int = Field(ge=0)
    committed_tokens: int = Field(ge=0)
    committed_chars: int = Field(ge=0)


class ErrorData(_Data):
    code: str
    message: str
    retryable: bool


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = PROTOCOL_VERSION
    job_id: str
    # Bounded so that `<epoch>-<seq>` is a stream entry id Redis accepts (64-bit parts).
    epoch: int = Field(ge=0, le=MAX_ID_PART)
    seq: int = Field(ge=0, le=MAX_ID_PART)
    ts_ms: int = Field(ge=0, default_factory=lambda: time.time_ns() // 1_000_000)


class TokenFrame(_Frame):
    type: Literal[FrameType.TOKEN] = FrameType.TOKEN
    data: TokenData


class ContinuationFrame(_Frame):
    type: Literal[FrameType.CONTINUATION] = FrameType.CONTINUATION
    data: ContinuationData


class WindowFrame(_Frame):
    type: Literal[FrameType.WINDOW] = FrameType.WINDOW
    data: WindowData


class ResumeFrame(_Frame):
    type: Literal[FrameType.RESUME] = FrameType.RESUME
    data: ResumeData


class DoneFrame(_Frame):
    type: Literal[FrameType.DONE] = FrameType.DONE
    data: JobResult


class ErrorFrame(_Frame):
    type: Literal[FrameType.ERROR] = FrameType.ERROR
    data: ErrorData


Frame = Annotated[
    TokenFrame | ContinuationFrame | WindowFrame | ResumeFrame | DoneFrame | ErrorFrame,
    Field(discriminator="type"),
]
_FRAME = TypeAdapter[Frame](Frame)
# Every frame class's first fields, in this order (see the module's docstring).
HEADER_FIELDS = ("v", "job_id", "epoch", "seq", "ts_ms", "type")
FRAME_CLASSES = (TokenFrame, ContinuationFrame, WindowFrame, ResumeFrame, DoneFrame, ErrorFrame)


def parse_frame(raw: str | bytes) -> Frame:
    """The frame in `raw`, validated whole (header and data); pydantic's ValidationError
    when it is not one (a ValueError: its errors say whether the JSON itself was bad)."""
    return _FRAME.validate_json(raw)


def is_json_error(exc: ValidationError) -> bool:
    """The message was not JSON at all (rather than JSON that is not a frame)."""
    return any(error["type"] == "json_invalid" for error in exc.errors(include_url=False))


def checkpoint_only(frame: Frame) -> bool:
    """A window sent again for the checkpoint only: never a stream entry (see above)."""
    return frame.seq == 0 and isinstance(frame, WindowFrame)
