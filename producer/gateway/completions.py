"""The requests of POST /v1/completions and /v1/chat/completions, and the genq job each asks
for (no I/O; serving.py submits them, and answers when the job ends or streams it as SSE).

Fields map to genq's JobSpec (defaults are genq's, e.g. max_tokens 256, temperature 0.8);
genq's own fields come as extra body fields (the SDK's `extra_body`): window_tokens,
max_windows, ignore_eos, top_k, min_p, repeat_penalty, deterministic, priority (0-9). `n` must
be 1, frequency/presence penalties 0; an unknown field is refused (400 naming it). Booleans
must be JSON's true or false (`"stream": "yes"` is a 400, as OpenAI answers it).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from genq.common.schemas import DEFAULT_PRIORITY, PRIORITY_MAX, PRIORITY_MIN, JobSpec
from genq.common.store.gateway import Kind
from genq.producer.gateway.errors import ApiError

JOB_ID_HEADER = "X-Genq-Job-Id"
# Passed to JobSpec as given, so that its strict validation judges them (400 naming the field).
PASSED = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "logit_bias",
    "window_tokens",
    "max_windows",
    "ignore_eos",
    "top_k",
    "min_p",
    "repeat_penalty",
    "deterministic",
)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class GenqFields(BaseModel):
    """genq's own JobSpec fields, taken as extra body fields (`Any`: JobSpec checks them)."""

    model_config = ConfigDict(extra="forbid")

    seed: Any = None
    logit_bias: Any = None
    window_tokens: Any = None
    max_windows: Any = None
    ignore_eos: Any = None
    top_k: Any = None
    min_p: Any = None
    repeat_penalty: Any = None
    deterministic: Any = None


class ApiRequest(GenqFields):
    """What both endpoints take. Sampling fields are `Any` here: JobSpec checks them."""

    kind: ClassVar[Kind]  # the endpoint's: the shape of its answer

    model: str
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    priority: Annotated[int, Field(strict=True, ge=PRIORITY_MIN, le=PRIORITY_MAX)] = (
        DEFAULT_PRIORITY
    )
    max_tokens: Any = None
    temperature: Any = None
    top_p: Any = None

    def fields(self) -> dict[str, Any]:
        """JobSpec fields of what every request has."""
        _refuse_unsupported(self)
        out = {name: getattr(self, name) for name in PASSED if getattr(self, name) is not None}
        out["model"] = self.model
        if self.stop is not None:
            out["stop"] = [self.stop] if isinstance(self.stop, str) else self.stop
        return out

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def spec_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def spec(self) -> JobSpec:
        """The job this request asks for; 400 naming the first field genq refuses."""
        return validated_spec(self.spec_fields())


class CompletionRequest(ApiRequest):
    kind: ClassVar[Kind] = "completion"
    prompt: str | list[str]
    logprobs: Any = None
    echo: StrictBool = False
    suffix: str | None = None
    best_of: int | None = None

    def spec_fields(self) -> dict[str, Any]:
        if self.echo or self.suffix is not None or self.best_of not in (None, 1):
            name = "echo" if self.echo else "suffix" if self.suffix is not None else "best_of"
            raise ApiError(400, f"{name} is not supported by genq", param=name)
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ApiError(
                    400, "prompt: give one prompt (a list of one string)", param="prompt"
                )
            prompt = prompt[0]
        out = {**self.fields(), "prompt": prompt}
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        return out


class ChatRequest(ApiRequest):
    kind: ClassVar[Kind] = "chat"
    messages: list[dict[str, Any]]
    max_completion_tokens: Any = None
    logprobs: StrictBool = False
    top_logprobs: Any = None

    def spec_fields(self) -> dict[str, Any]:
        out = {**self.fields(), "messages": [_message(m) for m in self.messages]}
        if self.max_completion_tokens is not None:
            out["max_tokens"] = self.max_completion_tokens
        if self.top_logprobs is not None and not self.logprobs:
            raise ApiError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        if self.logprobs:
            out["logprobs"] = 0 if self.top_logprobs is None else self.top_logprobs
        return out


def _message(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message with its content as text: OpenAI's list of text parts is joined."""
    content = message.get("content")
    if isinstance(content, list):
        parts = [
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        ]
        return {**message, "content": "".join(parts)}
    return message


def _refuse_unsupported(request: ApiRequest) -> None:
    if request.n not in (None, 1):
        raise ApiError(400, "n must be 1: genq runs one choice per request", param="n")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(request, name) not in (None, 0):
            raise ApiError(
                400, f"{name} is not supported (0 only); genq has repeat_penalty", param=name
            )


def validated_spec(fields: dict[str, Any]) -> JobSpec:
    """The job, or 400 naming the first field JobSpec refuses."""
    try:
        return JobSpec.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        raise ApiError(400, message, param=param) from None
