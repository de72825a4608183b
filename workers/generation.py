"""The generation loop: continuation windows of sampled tokens, text assembly, stops, chunks.

A job runs in windows. Each window starts from a fresh evaluation of the prompt plus the most
recent output that fits beside the window, with a sampler seeded from the job seed and the
window number; so a window computed after a resume on another worker is the same computation
as without one. After each window a `window` frame carries what a resume needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from common.frames import TokenData, WindowData
from common.schemas import FinishReason, JobSpec
from workers.chunks import Chunker
from workers.text import TextAssembler


class TokenBackend(Protocol):
    n_ctx: int

    def prompt_tokens(self, spec: JobSpec) -> list[int]: ...
    def tokens(self, context: list[int], spec: JobSpec, seed: int) -> Iterator[int]: ...
    def is_end(self, token: int) -> bool: ...
    def piece(self, token: int) -> bytes: ...


class FrameSink(Protocol):
    cancelled: bool  # the job's cancel was asked for; seen when a chunk or window starts

    def token(self, data: TokenData, ending: bool = False) -> None: ...
    def continuation(self, window: int) -> None: ...
    def window(self, data: WindowData) -> None: ...


@dataclass(frozen=True)
class Committed:
    """Output committed by earlier windows: where a resumed attempt starts."""

    windows: int = 0
    token_ids: Sequence[int] = ()
    finish_reason: FinishReason | None = None  # the job ended in the last committed window


@dataclass(frozen=True)
class Generated:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    windows: int


def window_seed(seed: int, window: int) -> int:
    """Window 0 uses the job seed itself; later windows a stable hash of (seed, window)."""
    if window == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{window}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def window_size(spec: JobSpec, room: int, produced: int) -> int:
    """Tokens the next window may generate; `room` is the context left after the prompt."""
    size = spec.window_tokens or max(1, room // 2)
    return min(size, room, spec.max_tokens - produced)


def kept_output(output: Sequence[int], room: int, size: int) -> list[int]:
    """The most recent output that fits in the context beside a window of `size` tokens."""
    keep = min(len(output), room - size)
    return list(output[len(output) - keep :]) if keep > 0 else []


@dataclass
class _Run:
    """One job attempt's running state."""

    backend: TokenBackend
    spec: JobSpec
    sink: FrameSink
    chunker: Chunker
    prompt: list[int]
    text: TextAssembler
    output: list[int] = field(default_factory=list)
    window_text: list[str] = field(default_factory=list)
    finish: FinishReason | None = None

    def release(self, text: str, token: int | None = None) -> None:
        if token is None:
            self.chunker.add_text(text)
        else:
            self.chunker.add(token, text)
        if text:
            self.window_text.append(text)

    def flush(self) -> None:
        if self.chunker.pending():
            self.sink.token(self.chunker.take(), ending=self.finish is not None)

    def run_window(self, window: int, size: int) -> None:
        """Generate up to `size` tokens; sets `finish` when the job ends inside the window."""
        room = self.backend.n_ctx - len(self.prompt)
        context = self.prompt + kept_output(self.output, room, size)
        seed = window_seed(self.spec.seed or 0, window)
        for produced, token in enumerate(self.backend.tokens(context, self.spec, seed), 1):
            if not self.spec.ignore_eos and self.backend.is_end(token):
                self.finish = FinishReason.STOP
                return
            self.output.append(token)
            self.release(self.text.feed(self.backend.piece(token)), token)
            if self.text.stopped:
                self.finish = FinishReason.STOP
                return
            if produced >= size:
                return
            if self.chunker.due():
                self.sink.token(self.chunker.take())
                if self.sink.cancelled:
                    self.finish = FinishReason.CANCELLED
                    return

    def end_window(self, window: int, start: int) -> None:
        """Flush the window's chunks (and, when the job ends, held-back text), then its
        `window` frame."""
        if self.finish is not None:
            self.release(self.text.finish())
        self.flush()
        data = WindowData(
            window=window,
            token_ids=self.output[start:],
            text="".join(self.window_text),
            tokens_total=len(self.output),
            finish_reason=self.finish,
        )
        self.window_text = []
        self.sink.window(data)


def generate(
    backend: TokenBackend,
    spec: JobSpec,
    sink: FrameSink,
    chunker: Chunker,
    committed: Committed = Committed(),
) -> Generated:
    """Run a job, or resume it after `committed`, to the end: end-of-sequence or a stop
    sequence (`stop`), max_tokens or max_windows (`length`), or a cancel (`cancelled`, seen
    after the chunk or window start that follows it). The token chunks of all
    attempts, each cut back to its resume point, concatenate to the result text."""
    prompt = backend.prompt_tokens(spec)
    run = _Run(backend, spec, sink, chunker, prompt, TextAssembler(spec.stop))
    _replay(run, committed.token_ids)
    run.finish = committed.finish_reason
    window, room = committed.windows, backend.n_ctx - len(prompt)
    while run.finish is None:
        size = window_size(spec, room, len(run.output))
        sink.continuation(window)
        start = len(run.output)
        if sink.cancelled:
            run.finish = FinishReason.CANCELLED
        else:
            run.run_window(window, size)
        window += 1
        if run.finish is None and _last_window(spec, window, len(run.output)):
            run.finish = FinishReason.LENGTH
        run.end_window(window - 1, start)
    if committed.finish_reason is not None:  # its last window frame carried the rest
        run.text.finish()
    return Generated(run.text.text, run.finish, len(prompt), len(run.output), window)


def _last_window(spec: JobSpec, windows: int, produced: int) -> bool:
    return produced >= spec.max_tokens or (
        spec.max_windows is not None and windows >= spec.max_windows
    )


def _replay(run: _Run, token_ids: Sequence[int]) -> None:
    """Bring the text assembler to where the committed windows left it (held-back bytes and
    stop-sequence prefixes included), emitting nothing."""
    for token in token_ids:
        run.text.feed(run.backend.piece(token))
    run.output.extend(token_ids)
