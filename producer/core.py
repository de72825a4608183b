"""What the sync and async clients share, with no I/O: turning user input into a job ready to
queue, and folding a job's frames into what a reader sees."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from common.errors import InvalidJob, JobFailed, PromptTooLong
from common.frames import DoneFrame, ErrorFrame, Frame, ResumeFrame, TokenFrame
from common.keys import new_job_id
from common.prompts import PromptCounter
from common.registry import ModelRegistry
from common.schemas import SEED_MAX, GenerateRequest, JobRecord, JobResult, JobSpec, JobState
from common.settings import Settings


def parse_spec(prompt: str | JobSpec | None, fields: Mapping[str, Any]) -> JobSpec:
    """Build a JobSpec from a prompt and keyword fields, with a readable error when invalid."""
    if isinstance(prompt, JobSpec) and not fields:
        return prompt  # already validated, and frozen
    if isinstance(prompt, JobSpec):  # fields on top of a spec are validated like any others
        raw = {**prompt.model_dump(exclude_unset=True), **fields}
    else:
        raw = {"prompt": prompt, **fields} if prompt is not None else dict(fields)
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidJob(f"invalid job: {describe_validation(exc)}") from None


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


@dataclass(frozen=True)
class PreparedJob:
    job_id: str
    record: JobRecord

    @property
    def request(self) -> GenerateRequest:
        return GenerateRequest(job_id=self.job_id, epoch=self.record.epoch)


def prepare_job(
    spec: JobSpec, settings: Settings, registry: ModelRegistry, prompts: PromptCounter
) -> PreparedJob:
    """Check a job against its model and give it an id and a seed; raises InvalidJob."""
    model = registry.get(spec.model)
    if spec.prompt_chars > settings.max_prompt_chars:
        raise PromptTooLong(
            f"prompt has {spec.prompt_chars} characters; the limit is {settings.max_prompt_chars}"
        )
    prompts.check_fits(spec, model)
    if spec.seed is None:
        spec = spec.model_copy(update={"seed": secrets.randbelow(SEED_MAX + 1)})
    record = JobRecord(
        spec=spec, state=JobState.QUEUED, queue=model.device, submitted_ms=time.time_ns() // 10**6
    )
    return PreparedJob(new_job_id(), record)


@dataclass(frozen=True)
class StreamStats:
    """What the subscriber saw: chunk counts and latencies from its own clock."""

    chunks: int
    tokens: int
    first_token_s: float | None  # submit (or attach) until the first token chunk arrived
    elapsed_s: float  # submit (or attach) until the last frame arrived

    @property
    def tokens_per_s(self) -> float:
        """Decode rate after the first token, as the subscriber received it."""
        if self.first_token_s is None or self.tokens < 2:
            return 0.0
        span = self.elapsed_s - self.first_token_s
        return (self.tokens - 1) / span if span > 0 else 0.0


@dataclass
class StreamState:
    """Folds frames into the text so far, statistics, and the terminal outcome."""

    job_id: str
    started: float = field(default_factory=time.monotonic)
    chunks: int = 0
    tokens: int = 0
    first_token_at: float | None = None
    last_frame_at: float | None = None
    terminal: DoneFrame | ErrorFrame | None = None
    _parts: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.terminal is not None

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def apply(self, frame: Frame) -> None:
        now = time.monotonic()
        self.last_frame_at = now
        if isinstance(frame, TokenFrame):
            self.chunks += 1
            self.tokens += len(frame.data.token_ids)
            self._parts.append(frame.data.text)
            if self.first_token_at is None:
                self.first_token_at = now
        elif isinstance(frame, ResumeFrame):
            # A new attempt continues from the last checkpoint: later text is regenerated.
            self._parts = [self.text[: frame.data.committed_chars]]
            self.tokens = frame.data.committed_tokens
        elif isinstance(frame, DoneFrame | ErrorFrame):
            self.terminal = frame

    def stats(self) -> StreamStats:
        first = None if self.first_token_at is None else self.first_token_at - self.started
        last = self.last_frame_at if self.last_frame_at is not None else time.monotonic()
        return StreamStats(self.chunks, self.tokens, first, last - self.started)

    def outcome(self) -> JobResult:
        """The result once the terminal frame arrived; raises JobFailed for an error frame."""
        if isinstance(self.terminal, ErrorFrame):
            err = self.terminal.data
            raise JobFailed(self.job_id, err.code, err.message, err.retryable)
        if self.terminal is None:
            raise RuntimeError("the stream has not reached its terminal frame")
        return self.terminal.data
