"""What the sync and async clients share, with no I/O: turning user input into a job ready to
queue, and folding a job's frames into what a reader sees."""

from __future__ import annotations

import bisect
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from genq.common.errors import InvalidEntry, InvalidJob, JobFailed, PromptTooLong, ResultNotReady
from genq.common.frames import (
    DoneFrame,
    ErrorData,
    ErrorFrame,
    Frame,
    ResumeFrame,
    TokenFrame,
    WindowFrame,
    parse_frame,
)
from genq.common.ids import new_job_id
from genq.common.prompts import PromptCounter
from genq.common.registry import LlamaModelConfig, ModelRegistry
from genq.common.routing import model_queue
from genq.common.schemas import (
    DEFAULT_PRIORITY,
    PRIORITY_MAX,
    PRIORITY_MIN,
    SEED_MAX,
    GenerateRequest,
    JobRecord,
    JobResult,
    JobSpec,
    JobState,
    describe_validation,
    json_kind,
)
from genq.common.settings import Settings
from genq.common.store import jobs, streams
from genq.common.tenants import DEFAULT_TENANT, check_tenant


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


@dataclass(frozen=True)
class PreparedJob:
    job_id: str
    record: JobRecord

    @property
    def request(self) -> GenerateRequest:
        return GenerateRequest(
            job_id=self.job_id, epoch=self.record.epoch, batch_id=self.record.batch_id
        )


@dataclass(frozen=True)
class Placement:
    """Where a job stands in the queue: its priority (0-9, 9 first), how long it may wait
    before it expires unstarted, and whose it is (its tenant's fair share and quotas)."""

    priority: int = DEFAULT_PRIORITY
    expires_in_s: float | None = None
    tenant: str = DEFAULT_TENANT

    def __post_init__(self) -> None:
        check_tenant(self.tenant)
        priority, expires = self.priority, self.expires_in_s
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidJob(f"priority must be an integer, got {json_kind(priority)}")
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise InvalidJob(f"priority must be {PRIORITY_MIN}-{PRIORITY_MAX}, got {priority}")
        if expires is None:
            return
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise InvalidJob(f"expires_in must be a number of seconds, got {json_kind(expires)}")
        if not 0 < expires < math.inf:  # NaN too
            raise InvalidJob(f"expires_in must be positive and finite, got {expires}")

    def expires_ms(self, submitted_ms: int) -> int:
        if self.expires_in_s is None:
            return 0
        return submitted_ms + int(self.expires_in_s * 1000)


def check_job(
    spec: JobSpec, settings: Settings, registry: ModelRegistry, prompts: PromptCounter
) -> None:
    """Raises InvalidJob (UnknownModel, PromptTooLong, a logit_bias id outside the vocabulary)
    for a job its model cannot run."""
    model = registry.get(spec.model)
    if spec.prompt_chars > settings.max_prompt_chars:
        raise PromptTooLong(
            f"prompt has {spec.prompt_chars} characters; the limit is {settings.max_prompt_chars}"
        )
    if isinstance(model, LlamaModelConfig):  # a remote server checks its own context
        prompts.check_bias(spec)
        prompts.check_fits(spec, model)


def prepare_job(
    spec: JobSpec,
    settings: Settings,
    registry: ModelRegistry,
    prompts: PromptCounter,
    placement: Placement | None = None,
) -> PreparedJob:
    """Check a job against its model and give it an id and a seed; raises InvalidJob."""
    check_job(spec, settings, registry, prompts)
    placement = placement or Placement()
    if spec.seed is None:
        spec = spec.model_copy(update={"seed": secrets.randbelow(SEED_MAX + 1)})
    submitted = time.time_ns() // 10**6
    record = JobRecord(
        spec=spec,
        state=JobState.QUEUED,
        queue=model_queue(registry, spec.model),
        priority=placement.priority,
        tenant=placement.tenant,
        submitted_ms=submitted,
        expires_ms=placement.expires_ms(submitted),
    )
    return PreparedJob(new_job_id(), record)


def parse_entry(job_id: str, entry_id: str, fields: Mapping[str, str]) -> Frame:
    """The frame of one stream entry of `job_id`; InvalidEntry when it is not one the relay
    writes there: a valid frame of this job in field `f`, at the entry id `EPOCH-SEQ`."""
    raw = streams.frame_of(fields)
    if raw is None:
        raise InvalidEntry(f"job {job_id}: stream entry {entry_id} has no frame")
    try:
        frame = parse_frame(raw)
    except ValidationError as exc:
        reason = describe_validation(exc)
        raise InvalidEntry(f"job {job_id}: stream entry {entry_id}: {reason}") from None
    if frame.job_id != job_id or f"{frame.epoch}-{frame.seq}" != entry_id:
        where = f"job {frame.job_id} at {frame.epoch}-{frame.seq}"
        raise InvalidEntry(f"job {job_id}: stream entry {entry_id} holds the frame of {where}")
    return frame


@dataclass(frozen=True)
class StreamStats:
    """What the subscriber saw: chunk counts and latencies from its own clock, and the
    stream entries it skipped because they did not validate."""

    chunks: int
    tokens: int
    first_token_s: float | None  # submit (or attach) until the first token chunk arrived
    elapsed_s: float  # submit (or attach) until the last frame arrived
    skipped: int = 0  # stream entries that did not validate (see parse_entry)

    @property
    def tokens_per_s(self) -> float:
        """Decode rate after the first token, as the subscriber received it."""
        if self.first_token_s is None or self.tokens < 2:
            return 0.0
        span = self.elapsed_s - self.first_token_s
        return (self.tokens - 1) / span if span > 0 else 0.0


@dataclass
class StreamState:
    """Folds a job's frames into the text so far, statistics and the terminal outcome.

    Frames come numbered (`epoch`, `seq`). A hole in the numbering (frames published while no
    relay ran, or an entry skipped as invalid) marks the text as needing repair:
    `repair_through` then names how many checkpointed windows would restore it, and the
    terminal `done` frame always does. `committed` counts the characters of `text` that no
    later attempt can take back (checkpointed windows, or the final text).

    The text is kept in parts and joined only when read whole: `length` counts it, and a
    printer reads what is new with `text_between`, at the cost of the new text alone (with
    `tail_from`, at none, when it is what the last token frame added).
    `rewrites` counts the times the text was replaced rather than added to (a resume that
    cut it back, a repair): only then does a printer need to compare whole texts.
    """

    job_id: str
    started: float = field(default_factory=time.monotonic)
    epoch: int = 0
    seq: int = 0  # last frame seen; 0 before the first
    chunks: int = 0
    tokens: int = 0
    first_token_at: float | None = None
    last_frame_at: float | None = None
    terminal: DoneFrame | ErrorFrame | None = None
    gap: bool = False
    repair_through: int | None = None  # windows whose checkpointed text would mend the gap
    committed: int = 0
    skipped: int = 0
    length: int = 0  # characters of `text`
    rewrites: int = 0  # times `text` was replaced rather than added to
    _parts: list[str] = field(default_factory=list, init=False, repr=False)
    _ends: list[int] = field(default_factory=list, init=False, repr=False)  # each part's end

    @property
    def done(self) -> bool:
        return self.terminal is not None

    @property
    def text(self) -> str:
        if len(self._parts) > 1:  # joined once: reading it again costs nothing
            self._parts, self._ends = ["".join(self._parts)], [self.length]
        return self._parts[0] if self._parts else ""

    def tail_from(self, start: int) -> str | None:
        """`text[start:]` when it is the text's last part (what the last token frame added),
        at no cost; else None (then `text_between` reads it)."""
        last = self._parts[-1] if self._parts else ""
        return last if self.length - len(last) == start else None

    def text_between(self, start: int, end: int) -> str:
        """`text[start:end]` (0 <= start), joining only the parts it spans."""
        pieces = []
        at = bisect.bisect_right(self._ends, start)  # the part that holds character `start`
        while at < len(self._parts) and (begin := self._ends[at] - len(self._parts[at])) < end:
            pieces.append(self._parts[at][max(start - begin, 0) : end - begin])
            at += 1
        return "".join(pieces)

    def apply(self, frame: Frame) -> None:
        now = time.monotonic()
        self.last_frame_at = now
        self._check_order(frame)
        if isinstance(frame, TokenFrame):
            self.chunks += 1
            self.tokens += frame.data.count
            self._add(frame.data.text)
            # A repair restores the text as of the window frame that asked for it; once later
            # text arrived it would drop that (the checkpoint may catch up only afterwards).
            self.repair_through = None
            if self.first_token_at is None:
                self.first_token_at = now
        elif isinstance(frame, ResumeFrame):
            # A new attempt continues from the last checkpoint: later text is regenerated.
            if frame.data.committed_chars < self.length:
                self._rewrite(self.text[: frame.data.committed_chars])
            self.tokens = frame.data.committed_tokens
            self._want_repair(frame.data.from_window)
            self._commit()
        elif isinstance(frame, WindowFrame):
            self._want_repair(frame.data.window + 1)
            self._commit()
        elif isinstance(frame, DoneFrame):
            self.terminal = frame
            if self.gap:
                self.repair(frame.data.text)
            self._commit()
        elif isinstance(frame, ErrorFrame):
            self.terminal = frame

    def repair(self, text: str) -> None:
        """The text as checkpointed (or finished): the hole is mended."""
        self._rewrite(text)
        self.gap, self.repair_through = False, None
        self.committed = len(text)

    def _add(self, text: str) -> None:
        self._parts.append(text)
        self.length += len(text)
        self._ends.append(self.length)

    def _rewrite(self, text: str) -> None:
        self._parts, self._ends, self.length = [text], [len(text)], len(text)
        self.rewrites += 1

    def _commit(self) -> None:
        """Without a hole, the text so far ends at a checkpoint (or is final)."""
        if not self.gap:
            self.committed = self.length

    def shown_length(self, eager: bool) -> int:
        """How much of the text a printer may show now: all of it once the stream ended.
        Before, while a hole waits to be mended, the committed text; otherwise the text so
        far (`eager`) or its committed part, which no resumed attempt can take back."""
        if self.done or (eager and not self.gap):
            return self.length
        return self.committed

    def shown_text(self, eager: bool) -> str:
        """What a printer may show now (see `shown_length`)."""
        return self.text[: self.shown_length(eager)]

    def _check_order(self, frame: Frame) -> None:
        if frame.epoch == self.epoch:
            in_order = frame.seq == self.seq + 1
        else:  # a new attempt numbers its frames from 1
            in_order = frame.epoch > self.epoch and frame.seq == 1
        self.gap = self.gap or not in_order
        self.epoch, self.seq = frame.epoch, frame.seq

    def _want_repair(self, windows: int) -> None:
        self.repair_through = windows if self.gap else None

    def stats(self) -> StreamStats:
        first = None if self.first_token_at is None else self.first_token_at - self.started
        last = self.last_frame_at if self.last_frame_at is not None else time.monotonic()
        return StreamStats(self.chunks, self.tokens, first, last - self.started, self.skipped)

    def outcome(self) -> JobResult:
        """The result once the terminal frame arrived; raises JobFailed for an error frame."""
        if isinstance(self.terminal, ErrorFrame):
            err = self.terminal.data
            raise JobFailed(self.job_id, err.code, err.message, err.retryable)
        if self.terminal is None:
            raise ResultNotReady(
                f"job {self.job_id}: the result can be read once the stream is consumed"
            )
        return self.terminal.data


parse_record = jobs.parse  # kept for its importers; the store decodes records


def terminal_from_record(record: JobRecord, job_id: str) -> DoneFrame | ErrorFrame:
    """A terminal frame for a job that ended while no relay wrote its stream's last frames."""
    if record.result is not None:
        return DoneFrame(job_id=job_id, epoch=record.epoch, seq=0, data=record.result)
    data = ErrorData(code="failed", message=record.error or "the job failed", retryable=False)
    return ErrorFrame(job_id=job_id, epoch=record.epoch, seq=0, data=data)


@dataclass
class TextFeed:
    """Writes a job's text as it settles (see StreamState.shown_text) without taking back
    what it wrote. What it writes is the job's final text, unless a resumed attempt
    regenerated differently what was already written (a remote model's job): then
    `diverged_at` says from which character of the job's text, and
    `stale` how many characters written before were the earlier attempt's; the new attempt's
    text from `diverged_at` on is written next, so that none of it is missing.

    `follow` reads a StreamState at the cost of the text added since the last call: what was
    written is a prefix of the state's text until the state rewrites it (a resume, a repair),
    and only then are whole texts compared. After a resume took back text written, each
    call compares the regenerated text with what was written there, once."""

    diverged_at: int | None = None
    stale: int = 0
    _written: list[str] = field(default_factory=list, init=False, repr=False)  # in pieces
    _length: int = field(default=0, init=False, repr=False)  # characters written
    # Characters written that the text read has too (its first `_agreed` characters).
    _agreed: int = field(default=0, init=False, repr=False)
    _rewrites: int = field(default=0, init=False, repr=False)  # the state's, when last read

    @property
    def written(self) -> str:
        """The job's text as far as it was written."""
        if len(self._written) != 1:  # joined once, when a rewrite makes it needed
            self._written = ["".join(self._written)]
        return self._written[0]

    def follow(self, state: StreamState, eager: bool = False) -> str:
        """What to write now of the state's text (see StreamState.shown_length)."""
        if state.rewrites != self._rewrites:  # text was replaced, not added to: compare it all
            self._rewrites = state.rewrites
            self._agreed = _common_prefix(state.text, self.written)
        shown = state.shown_length(eager)
        if shown == state.length and self._agreed == self._length:
            # All written agrees, all is shown: when what is new is the state's last part (a
            # token frame added in order), `_step` would write it, at the cost of reading it.
            added = state.tail_from(self._length)
            if added is not None:
                self.diverged_at, self.stale = None, 0
                return self._write(added)
        return self._step(state.text_between, shown, state.done)

    def advance(self, text: str, final: bool = False) -> str:
        """What to write now, given the whole text that may be shown now (`final`: the stream
        ended); it compares whole texts, as `follow` does only after a rewrite."""
        self._agreed = _common_prefix(text, self.written)
        return self._step(lambda start, end: text[start:end], len(text), final)

    def _step(self, read: Callable[[int, int], str], shown: int, final: bool) -> str:
        """`read(start, end)`: the text that may be shown, of which `shown` characters are."""
        self.diverged_at, self.stale = None, 0
        written, end = self._length, min(shown, self._length)
        if self._agreed < end:  # a regeneration where text was written: compare that part
            ours = read(self._agreed, end)
            self._agreed += _common_prefix(ours, self.written[self._agreed : end])
        at = min(self._agreed, end)  # the text shown and the text written agree up to here
        if at == written:
            return self._write(read(written, shown))
        if at == shown and not final:
            return ""  # a resume took text back: its regeneration comes again first
        self.diverged_at, self.stale = at, written - at
        self._written, self._length = [self.written[:at]], at
        return self._write(read(at, shown))

    def _write(self, new: str) -> str:
        self._written.append(new)
        self._length += len(new)
        self._agreed = self._length
        return new


def _common_prefix(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
