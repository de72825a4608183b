"""`ResponseEvents`: a job's frames as the Responses API's streamed events, with no I/O.

Every event carries a `sequence_number`, counted from 0 over the events of the job's durable
stream folded from its start: the same stream gives the same events with the same numbers, on
any gateway, at any time, so a client resumes with `starting_after=N` and is sent the events
after N, with no gap and no repeat. Text is folded by its offset (TextFeed, as chunks.Renderer
folds it): after a worker died and the job resumed elsewhere, the stream holds the first
attempt's text and then the new attempt's from its resume point; a delta carries only text
beyond what earlier events sent, so the deltas joined are the final `output_text`. Should a
resumed attempt's text differ from what was sent (a remote model), the events end with an
`error` event (`resumed_text_differs`): the response object (GET) holds the final text.

The events, in order: `response.created`, then `response.queued` for a background response
and `response.in_progress` at its first frame (at once for any other), then at the first text
`response.output_item.added` and `response.content_part.added`, `response.output_text.delta`
per new text (with logprobs when asked), and at the end `response.output_text.done`,
`response.content_part.done`, `response.output_item.done` and one of `response.completed`,
`response.incomplete` (its length reached), `response.cancelled`, `response.failed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genq.common.frames import DoneFrame, ErrorFrame, Frame, TokenFrame
from genq.common.schemas import JobResult
from genq.common.store.responses import ResponseRecord
from genq.producer.core import StreamState, TextFeed
from genq.producer.gateway import response_shapes as shapes
from genq.producer.gateway.chunks import DIVERGED

Event = dict[str, Any]

_TERMINAL = (DoneFrame, ErrorFrame)


@dataclass
class ResponseEvents:
    """One job's events, numbered as they are made."""

    job_id: str
    record: ResponseRecord
    feed: TextFeed = field(default_factory=TextFeed)
    number: int = 0  # the next event's sequence_number
    in_progress: bool = False
    opened: bool = False  # the output item and its content part were added
    ended: bool = False
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    # Text deltas numbered up to this are counted, not made: a reader that resumed after it
    # is not sent them (a replay's cost is then the folding of the frames before it).
    unsent_through: int = -1

    def start(self) -> list[Event]:
        """The events before any frame: created, then queued (background) or in_progress."""
        status = "queued" if self.record.background else "in_progress"
        events = [self._emit("response.created", response=self._running(status))]
        if self.record.background:
            return [*events, self._emit("response.queued", response=self._running("queued"))]
        self.in_progress = True
        return [*events, self._emit("response.in_progress", response=self._running(status))]

    def render(self, frame: Frame, state: StreamState) -> list[Event]:
        """The events `frame` adds, once `state` has applied it."""
        out: list[Event] = []
        terminal = isinstance(frame, _TERMINAL)
        if not self.in_progress and not terminal:
            self.in_progress = True
            out.append(self._emit("response.in_progress", response=self._running("in_progress")))
        new = self.feed.follow(state, eager=True)
        if self.feed.diverged_at is not None:
            return [*out, self._diverged()]
        if new:
            out.extend(self._delta(new, frame))
        if isinstance(frame, DoneFrame):
            out.extend(self._finished(frame.data))
        elif isinstance(frame, ErrorFrame):
            out.extend(self._failed(frame.data.code, frame.data.message))
        return out

    def error(self, code: str, message: str) -> Event:
        """An `error` event: the events end without the response's (see the docstring)."""
        self.ended = True
        return self._emit("error", code=code, message=message, param=None)

    def _emit(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.number, **fields}
        self.number += 1
        return event

    def _running(self, status: str) -> dict[str, Any]:
        return shapes.running(self.job_id, self.record, status, "")

    def _where(self) -> dict[str, Any]:
        return {"item_id": f"msg_{self.job_id}", "output_index": 0, "content_index": 0}

    def _open(self) -> list[Event]:
        self.opened = True
        item = shapes.message(self.job_id, "in_progress", [])
        part = shapes.output_text("", [] if self.record.logprobs else None)
        return [
            self._emit("response.output_item.added", output_index=0, item=item),
            self._emit("response.content_part.added", **self._where(), part=part),
        ]

    def _delta(self, new: str, frame: Frame) -> list[Event]:
        out = [] if self.opened else self._open()
        items = []
        whole = isinstance(frame, TokenFrame) and frame.data.text == new
        if self.record.logprobs and whole and isinstance(frame, TokenFrame):
            items = [shapes.logprob(t) for t in frame.data.logprobs or []]
            self.logprobs.extend(items)
        if self.number <= self.unsent_through:  # counted, not made (see the field)
            self.number += 1
            return out
        delta = self._emit("response.output_text.delta", **self._where(), delta=new, logprobs=items)
        return [*out, delta]

    def _close(self, status: str, items: list[dict[str, Any]] | None) -> list[Event]:
        """The done events of the output text, its part and its item."""
        text = self.feed.written
        part = shapes.output_text(text, items)
        item = shapes.message(self.job_id, status, [part])
        return [
            self._emit(
                "response.output_text.done", **self._where(), text=text, logprobs=items or []
            ),
            self._emit("response.content_part.done", **self._where(), part=part),
            self._emit("response.output_item.done", output_index=0, item=item),
        ]

    def _finished(self, result: JobResult) -> list[Event]:
        self.ended = True
        body = shapes.finished(self.job_id, self.record, result)
        status = body["status"]
        out: list[Event] = []
        if body["output"]:
            items = body["output"][0]["content"][0].get("logprobs")
            out = [*([] if self.opened else self._open()), *self._close(status, items)]
        return [*out, self._emit(f"response.{status}", response=body)]

    def _failed(self, code: str, message: str) -> list[Event]:
        self.ended = True
        out = self._close("failed", None) if self.opened else []
        body = shapes.failed(self.job_id, self.record, self.feed.written, code, message)
        return [*out, self._emit("response.failed", response=body)]

    def _diverged(self) -> Event:
        return self.error(
            DIVERGED,
            f"response {shapes.response_id(self.job_id)}: its job resumed on another worker "
            f"and the new attempt's text differs from what was streamed, from character "
            f"{self.feed.diverged_at}: retrieve the response for its final text",
        )
