"""The messages that cross Redis or Celery, as versioned pydantic models."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Literal, Self, get_args

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from genq.common.ids import BATCH_ID_CHARS, JOB_ID_PATTERN
from genq.common.tenants import DEFAULT_TENANT, TenantName

SEED_MAX = 2**32 - 1
PRIORITY_MIN, PRIORITY_MAX = 0, 9
DEFAULT_PRIORITY = 5  # room above and below; 9 is the most urgent
Priority = Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
Device = Literal["cpu", "gpu"]  # a model's device class, and so a worker's
ModelName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")
]


def describe_validation(exc: ValidationError) -> str:
    """A pydantic error in one line: `where: what` for each failure."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Input fields are typed strictly: what a user sends is what genq runs, so "10" and true are
# not 10 and 1, and a float is finite. Every string must encode as UTF-8 (Redis, JSON and the
# model all take UTF-8): Python strings can hold lone surrogates ("\ud800" in JSON) that
# cannot be encoded.
_SURROGATE = re.compile("[\ud800-\udfff]")


def unencodable(text: str) -> str | None:
    """Why `text` cannot be encoded as UTF-8 (a lone surrogate, and where), or None."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (
        f"cannot be encoded as UTF-8: a lone surrogate (\\u{ord(found[0]):04x}) at "
        f"character {found.start()}"
    )


def json_kind(value: object) -> str:
    """A value's type as JSON names it, for error messages (never the value of a string)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "an object" if isinstance(value, Mapping) else f"a {type(value).__name__}"


def _text(value: object) -> object:
    reason = unencodable(value) if isinstance(value, str) else None
    if reason is not None:
        raise PydanticCustomError("utf8", reason)
    return value


def _integer(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError(
            "int_type", "Input should be an integer, got {kind}", {"kind": json_kind(value)}
        )
    return value


def _number(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "float_type", "Input should be a number, got {kind}", {"kind": json_kind(value)}
        )
    if not math.isfinite(value):  # before the bounds, which NaN fails with a wrong reason
        raise PydanticCustomError(
            "finite_number", "Input should be a finite number, got {value}", {"value": str(value)}
        )
    return value


def _token_id(value: object) -> object:
    """A logit_bias key: an integer, or its decimal digits (JSON's object keys are strings)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return _integer(value)


# Strings that must encode as UTF-8. The check runs first: pydantic's own check of a
# constrained string fails on such a string, with a misleading reason.
_Utf8 = BeforeValidator(_text)
Text = Annotated[str, StringConstraints(strict=True), _Utf8]
StopText = Annotated[str, StringConstraints(min_length=1, max_length=256, strict=True), _Utf8]
MessageText = Annotated[str, StringConstraints(max_length=10_000_000, strict=True), _Utf8]
StrictInt = Annotated[int, BeforeValidator(_integer)]
# Ids in task messages become Redis keys: only what genq.common.ids.check_job_id accepts.
JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN, strict=True)]
Number = Annotated[float, BeforeValidator(_number)]
TokenId = Annotated[int, BeforeValidator(_token_id), Field(ge=0)]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self not in {JobState.QUEUED, JobState.RUNNING}


class FinishReason(StrEnum):
    STOP = "stop"  # end-of-sequence token or a stop sequence
    LENGTH = "length"  # max_tokens or max_windows
    CANCELLED = "cancelled"


LOGPROBS_MAX = 20  # OpenAI's limit on alternatives per token


class TopLogprob(_Model):
    token: str
    logprob: float


class TokenLogprob(_Model):
    """A generated token's log probability (natural log, under the model's distribution
    before sampling settings) and the most likely alternatives, most likely first."""

    token: str = Field(description="The token's text (bytes of a split character as U+FFFD).")
    logprob: float | None = Field(
        None,
        description="None where a remote server sent the token without its log probability "
        "(a checkpoint entry leaves it out: it is written without its None fields).",
    )
    top: list[TopLogprob] = Field(default_factory=list)


Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = get_args(Role)


class ChatMessage(_Model):
    role: Role
    content: MessageText


class JobSpec(_Model):
    """What a producer asks for. Exactly one of `prompt` and `messages`."""

    v: Literal[1] = 1
    model: ModelName = "tiny"
    prompt: Text | None = Field(None, description="Plain-text prompt.")
    messages: list[ChatMessage] | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Chat messages, rendered with the model's chat template.",
    )
    max_tokens: StrictInt = Field(
        256, ge=1, le=1_000_000, description="Tokens to generate at most."
    )
    temperature: Number = Field(0.8, ge=0.0, le=2.0, description="0 samples greedily.")
    top_p: Number = Field(0.95, gt=0.0, le=1.0)
    top_k: StrictInt = Field(40, ge=0, le=100_000, description="0 disables top-k.")
    min_p: Number = Field(0.05, ge=0.0, le=1.0)
    repeat_penalty: Number = Field(1.0, ge=0.0, le=10.0, description="1.0 disables it.")
    seed: StrictInt | None = Field(
        None, ge=0, le=SEED_MAX, description="Sampler seed; assigned at submit when absent."
    )
    stop: list[StopText] = Field(
        default_factory=list, max_length=16, description="Text ends before the first of these."
    )
    logit_bias: dict[TokenId, Annotated[Number, Field(ge=-100.0, le=100.0)]] = Field(
        default_factory=dict, max_length=1024, description="Token id to additive logit bias."
    )
    ignore_eos: bool = Field(
        False, strict=True, description="Keep generating past end-of-sequence."
    )
    deterministic: bool | None = Field(
        None,
        strict=True,
        description="Kept for compatibility, no effect: every local job is deterministic "
        "(genq's engine is batch-invariant, so a resumed job is bit-for-bit the run it "
        "continues, batched or not); a remote model's never is.",
    )
    window_tokens: StrictInt | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Tokens per continuation window (a checkpoint after each); default: half "
        "the context left after the prompt. Capped at that room.",
    )
    max_windows: StrictInt | None = Field(
        None,
        ge=1,
        le=1_000_000,
        validation_alias=AliasChoices("max_windows", "max_continuations"),
        description="Windows at most (alias max_continuations); default: what max_tokens needs.",
    )
    logprobs: StrictInt | None = Field(
        None,
        ge=0,
        le=LOGPROBS_MAX,
        description="Each token's log probability, with its N most likely alternatives, in "
        "every chunk and in the result. None: no log probabilities.",
    )

    @model_validator(mode="after")
    def _one_input(self) -> Self:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        return self

    @property
    def prompt_chars(self) -> int:
        if self.prompt is not None:
            return len(self.prompt)
        return sum(len(m.content) for m in self.messages or [])


class GenerateRequest(_Model):
    """The Celery task message: the job lives in Redis, so prompts stay out of the broker."""

    v: Literal[1] = 1
    job_id: JobId
    epoch: StrictInt = Field(0, ge=0)
    batch_id: str = Field(
        "",
        pattern=f"^({BATCH_ID_CHARS})?$",  # as genq.common.ids.check_batch_id, or none
        description="The job's batch, whose counts the worker keeps.",
    )

    @property
    def task_id(self) -> str:
        return f"{self.job_id}-{self.epoch}"


BUNDLE_JOBS_MAX = 256


class BundleRequest(_Model):
    """The Celery task message for several short jobs of one batch, which one worker process
    claims together and runs one after another: the broker's per-message cost (a fetch, an
    ack, task events) is paid once for them all."""

    v: Literal[1] = 1
    jobs: list[GenerateRequest] = Field(min_length=1, max_length=BUNDLE_JOBS_MAX)

    @model_validator(mode="after")
    def _one_batch(self) -> BundleRequest:
        if len({job.batch_id for job in self.jobs}) != 1:
            raise ValueError("a bundle's jobs belong to one batch")
        return self

    @property
    def task_id(self) -> str:
        return f"{self.jobs[0].task_id}+{len(self.jobs) - 1}"


class Usage(_Model):
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Timings(_Model):
    """Milliseconds are wall-clock, measured across machines from the job's timestamps."""

    queue_wait_ms: float = Field(description="Submitted until a worker started the job.")
    first_token_ms: float = Field(description="Submitted until the first token was published.")
    generation_ms: float = Field(description="Worker start until the last token.")
    tokens_per_s: float = Field(description="Completion tokens over generation time.")


class JobResult(_Model):
    job_id: str
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    logprobs: list[TokenLogprob] | None = Field(
        None, description="One per completion token, when the job asked for logprobs."
    )


class JobRecord(_Model):
    """A job's record, kept in the job hash: its encoding (one field per attribute, JSON for
    nested values) is common/store/jobs.py's (`encode`, `decode`)."""

    spec: JobSpec
    state: JobState
    epoch: int = Field(0, ge=0)
    attempts: int = Field(0, ge=0)
    queue: str
    priority: Priority = DEFAULT_PRIORITY
    batch_id: str = ""
    custom_id: str = ""
    tenant: TenantName = Field(DEFAULT_TENANT, description="Who the job belongs to.")
    dispatched: bool = Field(True, description="Its task message was sent to the broker.")
    worker: str = ""
    submitted_ms: int
    expires_ms: int = Field(0, ge=0, description="Not started by then: expired. 0: never.")
    started_ms: int = 0
    finished_ms: int = 0
    result: JobResult | None = None
    error: str = ""
    error_code: str = ""


class BatchStatus(_Model):
    """A batch's record: counts by job state, kept by the scripts that move jobs between
    states, so reading it costs one command however large the batch (its encoding is
    common/store/batches.py's: `decode_status`)."""

    batch_id: str
    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    tokens: int = Field(0, description="Completion tokens of the jobs that ended.")
    priority: Priority = DEFAULT_PRIORITY
    created_ms: int = 0
    finished_ms: int = Field(0, description="When the latest job ended.")
    expires_ms: int = 0
    cancel_requested: bool = False
    tenant: TenantName = Field(DEFAULT_TENANT, description="Who the batch belongs to.")

    @property
    def ended(self) -> int:
        return self.succeeded + self.failed + self.cancelled + self.expired

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.ended >= self.total

    @property
    def state(self) -> str:
        if not self.complete:
            return "cancelling" if self.cancel_requested else "in_progress"
        return "cancelled" if self.cancel_requested else "completed"


class ResultError(_Model):
    code: str
    message: str


class ResultLine(_Model):
    """One line of a batch's results file, in input order."""

    custom_id: str
    job_id: str
    status: JobState
    text: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    error: ResultError | None = None


class WorkerInfo(_Model):
    """What a running worker records about itself in Redis (common/store/presence.py),
    refreshed by its heartbeat."""

    v: Literal[1] = 1
    name: str = Field(description="Celery node name, e.g. genq@host.")
    device: Device
    models: list[str]
    queues: list[str] = Field(description="The broker queues it consumes.")
    slots: dict[str, int] = Field(
        default_factory=dict, description="Jobs it runs at once, per model (its serving plan)."
    )
    pid: int = Field(description="Its main process.")
    started_ms: int
    heartbeat_ms: int = Field(description="Wall-clock time of its latest heartbeat.")
    heartbeat_interval_s: float
    # Defaults: a record of a worker from before these fields still reads (genq.common.host).
    hostname: str = Field("", description="The host's name (hosts may share one).")
    address: str | None = Field(
        None, description="The address it reaches Redis from: tells apart hosts of one name."
    )
