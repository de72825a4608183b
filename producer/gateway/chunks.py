"""OpenAI's response shapes from genq's frames and results, with no I/O: the non-streaming
`text_completion` / `chat.completion`, and `Renderer`, which turns a job's frames into the SSE
chunks a client is sent.

What a client was sent is a pure function of the job's durable stream up to an event id: any
gateway rebuilds it by replaying the stream from the start through a Renderer, sending only
the events after the client's `Last-Event-ID`. Text is sent as it comes (TextFeed, eager);
after a resume (a worker died) the regenerated text that was already sent is skipped. When a
resumed attempt's text differs from what was sent (a remote
model), the stream ends with an error event `resumed_text_differs`: the client should read the
final result (GET the job, or a non-streaming request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genq.common.frames import DoneFrame, ErrorFrame, Frame, TokenFrame
from genq.common.schemas import FinishReason, JobResult, TokenLogprob
from genq.common.store.gateway import StreamMeta
from genq.producer.core import StreamState, TextFeed

DONE = "[DONE]"
DIVERGED = "resumed_text_differs"
# genq's cancelled has no OpenAI counterpart: the text stopped because it was asked to.
FINISH = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length", FinishReason.CANCELLED: "stop"}

Payload = dict[str, Any] | str  # a chunk's JSON, or DONE


def completion_id(meta: StreamMeta, job_id: str) -> str:
    return f"{'chatcmpl' if meta.kind == 'chat' else 'cmpl'}-{job_id}"


def usage(result: JobResult) -> dict[str, int]:
    u = result.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def logprobs(meta: StreamMeta, items: list[TokenLogprob] | None) -> dict[str, Any] | None:
    """OpenAI's logprobs object of the request's kind, or None."""
    if items is None:
        return None
    if meta.kind == "chat":
        return {"content": [_chat_logprob(t) for t in items]}
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [{a.token: a.logprob for a in t.top} for t in items],
        "text_offset": [],
    }


def _chat_logprob(item: TokenLogprob) -> dict[str, Any]:
    top = [{"token": a.token, "logprob": a.logprob, "bytes": None} for a in item.top]
    return {"token": item.token, "logprob": item.logprob, "bytes": None, "top_logprobs": top}


def response(meta: StreamMeta, result: JobResult) -> dict[str, Any]:
    """The non-streaming body of a finished job."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": FINISH[result.finish_reason]}
    if meta.kind == "chat":
        choice["message"] = {"role": "assistant", "content": result.text, "refusal": None}
    else:
        choice["text"] = result.text
    choice["logprobs"] = logprobs(meta, result.logprobs)
    return {
        "id": completion_id(meta, result.job_id),
        "object": "chat.completion" if meta.kind == "chat" else "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
        "usage": usage(result),
    }


def list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's cursor page of objects (files, batches)."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def error_body(message: str, code: str, kind: str = "server_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@dataclass
class Renderer:
    """A job's frames, folded in order (by its stream's StreamState), as SSE payloads."""

    job_id: str
    meta: StreamMeta
    feed: TextFeed = field(default_factory=TextFeed)
    role_sent: bool = False
    ended: bool = False

    def render(self, frame: Frame, state: StreamState) -> list[Payload]:
        """The payloads `frame` adds, once `state` has applied it."""
        new = self.feed.follow(state, eager=True)
        if self.feed.diverged_at is not None:
            self.ended = True
            return [self._diverged()]
        out: list[Payload] = []
        if new:
            items = frame.data.logprobs if isinstance(frame, TokenFrame) else None
            same = isinstance(frame, TokenFrame) and frame.data.text == new
            out.append(
                self._chunk(self._text(new), None, logprobs(self.meta, items) if same else None)
            )
        if isinstance(frame, DoneFrame):
            out.extend(self._closing(frame.data))
        elif isinstance(frame, ErrorFrame):
            self.ended = True
            out.append(error_body(frame.data.message, frame.data.code))
        return out

    def _closing(self, result: JobResult) -> list[Payload]:
        self.ended = True
        empty = {} if self.meta.kind == "chat" else {"text": ""}
        out: list[Payload] = [self._chunk(empty, FINISH[result.finish_reason], None)]
        if self.meta.include_usage:
            out.append({**self._base(), "choices": [], "usage": usage(result)})
        out.append(DONE)
        return out

    def _diverged(self) -> dict[str, Any]:
        return error_body(
            f"job {self.job_id} resumed on another worker and its new attempt's text differs "
            f"from what this stream sent, from character {self.feed.diverged_at}: read the "
            "job's final result instead (a non-streaming request, or `genq tail`)",
            DIVERGED,
        )

    def _text(self, new: str) -> dict[str, Any]:
        if self.meta.kind != "chat":
            return {"text": new}
        delta: dict[str, Any] = {"content": new}
        if not self.role_sent:
            self.role_sent = True
            delta = {"role": "assistant", **delta}
        return delta

    def _base(self) -> dict[str, Any]:
        chat = self.meta.kind == "chat"
        return {
            "id": completion_id(self.meta, self.job_id),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": self.meta.created,
            "model": self.meta.model,
        }

    def _chunk(self, body: dict[str, Any], finish: str | None, lp: Any) -> dict[str, Any]:
        key = "delta" if self.meta.kind == "chat" else None
        choice: dict[str, Any] = {"index": 0}
        if key:
            choice[key] = body
        else:
            choice.update(body)
        choice.update({"logprobs": lp, "finish_reason": finish})
        extra = {"usage": None} if self.meta.include_usage else {}
        return {**self._base(), "choices": [choice], **extra}
