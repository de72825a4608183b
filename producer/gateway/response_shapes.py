"""The Responses API's shapes, with no I/O: the request of POST /v1/responses and the genq job
it asks for, and OpenAI's response object built from what genq keeps.

A request's `input` is a string (one user message) or a list of messages whose content is a
string or a list of text parts (`input_text`, or `output_text` in an assistant's turn);
`instructions` come first as a system message. `max_output_tokens`, `temperature`, `top_p`,
`metadata`, `store`, `user`, `include: ["message.output_text.logprobs"]` and `top_logprobs`
are OpenAI's; genq's own fields come as extra body fields, as on the chat endpoint (seed,
priority, window_tokens, ...). Everything else is refused with a 400 naming the field, before
anything is queued: tools, tool_choice, previous_response_id, a non-text input part, an
unknown field.

A response's id is `resp_` + its job's id (job ids are unguessable); its one output message is
`msg_` + the job's id.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StrictBool, StrictInt

from genq.common.ids import is_job_id
from genq.common.schemas import (
    DEFAULT_PRIORITY,
    LOGPROBS_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    FinishReason,
    JobResult,
    JobSpec,
    TokenLogprob,
)
from genq.common.store.responses import ResponseRecord
from genq.producer.gateway.completions import PASSED, GenqFields, validated_spec
from genq.producer.gateway.errors import ApiError

RESPONSE_PREFIX = "resp_"
LOGPROBS_INCLUDE = "message.output_text.logprobs"
# Fields of OpenAI's request that genq refuses by name (any other unknown field is refused too).
REFUSED = {
    "tools": "tools are not supported by genq: it generates text only",
    "tool_choice": "tool_choice is not supported by genq: it generates text only",
    "previous_response_id": "previous_response_id is not supported: genq keeps no "
    "conversation state; send the earlier turns in `input`",
}
# genq's JobSpec fields a request may give as extra body fields (OpenAI's own are mapped).
EXTENSIONS = tuple(name for name in PASSED if name not in ("max_tokens", "temperature", "top_p"))
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text")
# A finished job's status, and why an incomplete one stopped.
STATUS = {
    FinishReason.STOP: "completed",
    FinishReason.LENGTH: "incomplete",
    FinishReason.CANCELLED: "cancelled",
}


class ResponseRequest(GenqFields):
    """What POST /v1/responses takes. Sampling fields are `Any` here: JobSpec checks them."""

    model: str
    input: str | list[Any]
    instructions: str | None = None
    stream: StrictBool = False
    background: StrictBool = False
    store: StrictBool = True
    metadata: dict[str, str] | None = None
    max_output_tokens: Any = None
    temperature: Any = None
    top_p: Any = None
    include: list[str] | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=LOGPROBS_MAX)] | None = None
    user: str | None = None
    priority: Annotated[int, Field(strict=True, ge=PRIORITY_MIN, le=PRIORITY_MAX)] = (
        DEFAULT_PRIORITY
    )
    stop: str | list[str] | None = None
    tools: Any = None
    tool_choice: Any = None
    previous_response_id: Any = None

    @property
    def logprobs(self) -> bool:
        return LOGPROBS_INCLUDE in (self.include or [])

    def spec(self) -> JobSpec:
        """The job this request asks for; 400 naming the first field genq refuses."""
        self._refuse()
        out: dict[str, Any] = {"model": self.model, "messages": self.messages()}
        out.update({n: getattr(self, n) for n in EXTENSIONS if getattr(self, n) is not None})
        mapped = {"max_tokens": self.max_output_tokens, "temperature": self.temperature}
        out.update({n: v for n, v in {**mapped, "top_p": self.top_p}.items() if v is not None})
        if self.stop is not None:
            out["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        if self.logprobs or self.top_logprobs is not None:
            out["logprobs"] = self.top_logprobs or 0
        return validated_spec(out)

    def _refuse(self) -> None:
        for name, message in REFUSED.items():
            value = getattr(self, name)
            if value is not None and not (name == "tools" and value == []):
                raise ApiError(400, message, param=name)
        for i, item in enumerate(self.include or []):
            if item != LOGPROBS_INCLUDE:
                message = f"include: genq can include {LOGPROBS_INCLUDE!r} only, got {item!r}"
                raise ApiError(400, message, param=f"include[{i}]")

    def messages(self) -> list[dict[str, str]]:
        """The chat messages of `instructions` and `input`; 400 naming a part genq refuses."""
        first = [] if self.instructions is None else [_msg("system", self.instructions)]
        if isinstance(self.input, str):
            return [*first, _msg("user", self.input)]
        if not self.input:
            raise ApiError(400, "input: give a string or at least one message", param="input")
        return [*first, *(_message(item, f"input[{i}]") for i, item in enumerate(self.input))]

    def record(self, spec: JobSpec, tenant: str, created_at: int) -> ResponseRecord:
        """What the response object echoes: the job's sampling as it runs."""
        return ResponseRecord(
            tenant=tenant,
            created_at=created_at,
            model=self.model,
            background=self.background,
            instructions=self.instructions,
            max_output_tokens=spec.max_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            metadata=self.metadata,
            store=self.store,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            user=self.user,
        )


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _message(item: Any, where: str) -> dict[str, str]:
    """One input item as a chat message; 400 for an item or part that is not text."""
    if not isinstance(item, dict):
        raise ApiError(400, f"{where}: give a message object", param=where)
    if item.get("type", "message") != "message":
        kind = item.get("type")
        raise ApiError(400, f"{where}: {kind!r} items are not supported (text only)", param=where)
    role = ROLES.get(item.get("role", ""))
    if role is None:
        message = f"{where}.role: one of {', '.join(ROLES)}, got {item.get('role')!r}"
        raise ApiError(400, message, param=f"{where}.role")
    unknown = set(item) - {"type", "role", "content"}
    if unknown:
        name = sorted(unknown)[0]
        raise ApiError(400, f"{where}.{name} is not supported", param=f"{where}.{name}")
    return _msg(role, _content(item.get("content"), f"{where}.content"))


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError(400, f"{where}: give a string or a list of text parts", param=where)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("text") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS or not isinstance(text, str):
            message = f"{where}[{j}]: {kind!r} parts are not supported (input_text only)"
            raise ApiError(400, message, param=f"{where}[{j}]")
        texts.append(text)
    return "".join(texts)


# -- ids ------------------------------------------------------------------------------------


def response_id(job_id: str) -> str:
    return f"{RESPONSE_PREFIX}{job_id}"


def job_of(ident: str) -> str | None:
    """The job id a response id names; None when it names none."""
    job_id = ident.removeprefix(RESPONSE_PREFIX)
    return job_id if ident.startswith(RESPONSE_PREFIX) and is_job_id(job_id) else None


# -- the response object ---------------------------------------------------------------------


def logprob(item: TokenLogprob) -> dict[str, Any]:
    """One token's logprob in OpenAI's output_text shape (the delta events' too)."""
    top = [_alternative(a.token, a.logprob) for a in item.top]
    return {**_alternative(item.token, item.logprob), "top_logprobs": top}


def _alternative(token: str, value: float | None) -> dict[str, Any]:
    return {"token": token, "bytes": list(token.encode()), "logprob": value}


def output_text(text: str, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "output_text", "text": text, "annotations": []}
    if logprobs is not None:
        part["logprobs"] = logprobs
    return part


def message(job_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    """The response's one output item: its text so far, or all of it."""
    item_status = {"completed": "completed", "in_progress": "in_progress"}.get(status)
    return {
        "id": f"msg_{job_id}",
        "type": "message",
        "role": "assistant",
        "status": item_status or "incomplete",
        "content": content,
    }


def usage(result: JobResult) -> dict[str, Any]:
    u = result.usage
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    }


def error(code: str, message_text: str) -> dict[str, str]:
    """A failed response's `error` (genq's code kept in the message: OpenAI's are few)."""
    return {"code": "server_error", "message": f"{code}: {message_text}"}


def response_object(
    job_id: str,
    record: ResponseRecord,
    status: str,
    output: list[dict[str, Any]],
    **ended: Any,
) -> dict[str, Any]:
    """OpenAI's response object; `ended` sets `usage`, `error`, `incomplete_details`."""
    return {
        "id": response_id(job_id),
        "object": "response",
        "created_at": record.created_at,
        "status": status,
        "background": record.background,
        "error": ended.get("error"),
        "incomplete_details": ended.get("incomplete_details"),
        "instructions": record.instructions,
        "max_output_tokens": record.max_output_tokens,
        "metadata": record.metadata or {},
        "model": record.model,
        "output": output,
        "parallel_tool_calls": False,
        "previous_response_id": None,
        "store": record.store,
        "temperature": record.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": "none",
        "tools": [],
        "top_logprobs": record.top_logprobs,
        "top_p": record.top_p,
        "truncation": "disabled",
        "usage": ended.get("usage"),
        "user": record.user,
    }


def finished(job_id: str, record: ResponseRecord, result: JobResult) -> dict[str, Any]:
    """The object of a job that finished (completed, incomplete at its length, cancelled)."""
    status = STATUS[result.finish_reason]
    items = None
    if record.logprobs and result.logprobs is not None:
        items = [logprob(t) for t in result.logprobs]
    output: list[dict[str, Any]] = []
    if result.text or status != "cancelled":
        output = [message(job_id, status, [output_text(result.text, items)])]
    incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
    return response_object(
        job_id, record, status, output, usage=usage(result), incomplete_details=incomplete
    )


def failed(
    job_id: str, record: ResponseRecord, text: str, code: str, message_text: str
) -> dict[str, Any]:
    """The object of a job that failed, with the text it had sent."""
    output = [message(job_id, "failed", [output_text(text, None)])] if text else []
    return response_object(job_id, record, "failed", output, error=error(code, message_text))


def running(job_id: str, record: ResponseRecord, status: str, text: str) -> dict[str, Any]:
    """The object of a job queued or running, with its text so far."""
    output = [message(job_id, status, [output_text(text, None)])] if text else []
    return response_object(job_id, record, status, output)
