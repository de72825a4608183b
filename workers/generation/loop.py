"""The generation loop: continuation windows of tokens, text assembly, stops, chunks.

A job runs in windows; after each a `window` frame carries what the checkpoint keeps. A
backend's session produces a window's tokens: a local model samples them (`TokenSession`, the
same computation whether or not the job was resumed, and wherever it was resumed, inside a
window too), a remote one streams them from a server, continuing from the text so far. Stop
sequences, lengths and chunking are done here, so they behave the same on every backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Protocol

from genq.common.frames import TokenData, WindowData
from genq.common.schemas import FinishReason, JobSpec, TokenLogprob
from genq.workers.generation.chunks import Chunker
from genq.workers.generation.resume import Committed
from genq.workers.generation.sampled import Sampled
from genq.workers.generation.text import TextAssembler


@dataclass(frozen=True, slots=True)
class Piece:
    """One generated token: its id (None from a backend that streams text, a remote model),
    its bytes, and its log probability when the job asked for them."""

    token: int | None
    data: bytes
    logprob: TokenLogprob | None = None


class Session(Protocol):
    """One job attempt on a backend: the prompt, then windows of pieces."""

    prompt_tokens: int
    room: int  # tokens the windows may fill: the context left after the prompt
    default_window: int  # window size when the job does not give one
    end: FinishReason | None  # set when the backend ended the job inside a window
    stops: Sequence[str]  # stop sequences of the rendering, beside the job's (a transcript's)

    def replay(self, committed: Committed) -> bytes:
        """Take the committed output (its partial window too) as generated; returns its
        bytes."""
        ...

    def pieces(self, window: int, size: int, started: int = 0) -> Generator[Piece]:
        """Up to `size - started` pieces after everything generated so far, `started` being
        the window's tokens already generated (a resume inside the window); ends early,
        setting `end`, when the model ends the job (a remote server may also end a window
        early, leaving `end` unset). Closing the iterator early releases its resources."""
        ...

    def close(self) -> None:
        """The job attempt is over: give back what it held (a local model's sequence)."""
        ...


class Backend(Protocol):
    def session(self, spec: JobSpec) -> Session: ...


class TokenSequence(Protocol):
    """Where a local job's windows are decoded: a sequence of the model's batched engine,
    held from the job's first window to its end."""

    def tokens(
        self, context: list[int], spec: JobSpec, seed: int, position: int
    ) -> Generator[Sampled]:
        """Sampled tokens after `context`, endlessly, the first being output token
        `position`; the caller decides when to stop, and closes the generator."""
        ...

    def close(self) -> None: ...


class TokenBackend(Protocol):
    """A backend that samples token ids from a local model; `TokenSession` runs its windows."""

    n_ctx: int

    def prompt_tokens(self, spec: JobSpec) -> list[int]: ...
    def sequence(self, spec: JobSpec) -> TokenSequence: ...
    def is_end(self, token: int) -> bool: ...
    def piece(self, token: int) -> bytes: ...


class TokenSession:
    """Windows over a local model. Each starts from the prompt plus the latest output that
    fits beside the window; each token is drawn with a seed of the job seed and its output
    position. The engine's logits do not depend on batch neighbours or on how the context
    was evaluated, so a resumed window, from its start or from inside it, on any worker,
    samples what an uninterrupted one did."""

    def __init__(self, backend: TokenBackend, spec: JobSpec) -> None:
        self.backend, self.spec = backend, spec
        self.prompt = backend.prompt_tokens(spec)
        self.prompt_tokens = len(self.prompt)
        self.room = backend.n_ctx - len(self.prompt)
        self.default_window = max(1, self.room // 2)
        self.end: FinishReason | None = None
        self.stops: Sequence[str] = ()  # set by the backend for a chat rendered as a transcript
        self.output: list[int] = []
        self._sequence: TokenSequence | None = None  # taken at the first window

    def replay(self, committed: Committed) -> bytes:
        tokens = committed.all_token_ids
        self.output.extend(tokens)
        return b"".join(self.backend.piece(token) for token in tokens)

    def pieces(self, window: int, size: int, started: int = 0) -> Generator[Piece]:
        backend, spec = self.backend, self.spec
        if self._sequence is None:
            self._sequence = backend.sequence(spec)
        before = self.output[: len(self.output) - started]  # the output at the window's start
        context = [
            *self.prompt,
            *kept_output(before, self.room, size),
            *self.output[len(before) :],
        ]
        position = len(self.output)
        with closing(self._sequence.tokens(context, spec, spec.seed or 0, position)) as sampled:
            for item in sampled:
                token = item.token
                if not spec.ignore_eos and backend.is_end(token):
                    self.end = FinishReason.STOP
                    return
                self.output.append(token)
                yield Piece(token, backend.piece(token), item.logprob)

    def close(self) -> None:
        if self._sequence is not None:
            self._sequence.close()
            self._sequence = None


class FrameSink(Protocol):
    cancelled: bool  # the job's cancel was asked for; seen when a chunk or window starts

    def token(self, data: TokenData, ending: bool = False) -> None: ...
    def continuation(self, window: int) -> None: ...
    def publish_window(self, data: WindowData) -> None: ...


@dataclass(frozen=True)
class Generated:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    windows: int
    logprobs: list[TokenLogprob] | None = None


def window_seed(seed: int, window: int) -> int:
    """Window 0 uses the job seed itself; later windows a stable hash of (seed, window)."""
    if window == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{window}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def window_size(spec: JobSpec, session: Session, produced: int) -> int:
    """Tokens the next window may generate."""
    size = spec.window_tokens or session.default_window
    return min(size, session.room, spec.max_tokens - produced)


def kept_output(output: Sequence[int], room: int, size: int) -> list[int]:
    """The most recent output that fits in the context beside a window of `size` tokens."""
    keep = min(len(output), room - size)
    return list(output[len(output) - keep :]) if keep > 0 else []


@dataclass
class _Run:
    """One job attempt's running state."""

    session: Session
    spec: JobSpec
    sink: FrameSink
    chunker: Chunker
    text: TextAssembler
    produced: int = 0
    window_ids: list[int] = field(default_factory=list)
    window_tokens: int = 0
    window_text: list[str] = field(default_factory=list)
    window_logprobs: list[TokenLogprob] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish: FinishReason | None = None

    def release(self, text: str, piece: Piece | None = None) -> None:
        if piece is None:
            self.chunker.add_text(text)
        else:
            self.chunker.add(piece.token, text, piece.logprob)
            if piece.logprob is not None:
                self.window_logprobs.append(piece.logprob)
        if text:
            self.window_text.append(text)

    def flush(self) -> None:
        if self.chunker.pending():
            self.sink.token(self.chunker.take(), ending=self.finish is not None)

    def run_window(self, window: int, size: int) -> None:
        """Generate the window's tokens up to `size` (some may be there already: a resume
        inside it); sets `finish` when the job ends inside the window."""
        started = self.window_tokens
        if started >= size:
            return  # every token of it reached the stream before its attempt ended: only
            # its frame is due (one more token here would be the next window's, sampled
            # from another context)
        with closing(self.session.pieces(window, size, started)) as pieces:
            for produced, piece in enumerate(pieces, started + 1):
                self.produced += 1
                self.window_tokens += 1
                if piece.token is not None:
                    self.window_ids.append(piece.token)
                self.release(self.text.feed(piece.data), piece)
                if self.text.stopped:
                    self.finish = FinishReason.STOP
                    return
                if produced >= size:
                    return
                if self.chunker.due():
                    self.sink.token(self.chunker.take())
                    self.chunker.sent()
                    if self.sink.cancelled:
                        self.finish = FinishReason.CANCELLED
                        return
        self.finish = self.session.end  # None: the backend ended the window early

    def end_window(self, window: int) -> None:
        """Flush the window's chunks (and, when the job ends, held-back text), then its
        `window` frame."""
        if self.finish is not None:
            self.release(self.text.finish())
        self.flush()
        data = WindowData(
            window=window,
            token_ids=self.window_ids,
            text="".join(self.window_text),
            tokens=None if len(self.window_ids) == self.window_tokens else self.window_tokens,
            tokens_total=self.produced,
            finish_reason=self.finish,
            logprobs=self.window_logprobs if self.spec.logprobs is not None else None,
        )
        if self.logprobs is not None:
            self.logprobs += self.window_logprobs
        self.window_ids, self.window_tokens, self.window_text = [], 0, []
        self.window_logprobs = []
        self.sink.publish_window(data)


def generate(
    backend: Backend,
    spec: JobSpec,
    sink: FrameSink,
    chunker: Chunker,
    committed: Committed | None = None,
) -> Generated:
    """Run a job, or resume it after `committed`, to the end: end-of-sequence or a stop
    sequence (`stop`), max_tokens or max_windows (`length`), or a cancel (`cancelled`, seen
    after the chunk or window start that follows it). The token chunks of all
    attempts, each cut back to its resume point, concatenate to the result text."""
    session = backend.session(spec)
    try:
        return _generate(session, spec, sink, chunker, committed or Committed())
    finally:
        session.close()


def _generate(
    session: Session, spec: JobSpec, sink: FrameSink, chunker: Chunker, committed: Committed
) -> Generated:
    run = _Run(session, spec, sink, chunker, TextAssembler([*spec.stop, *session.stops]))
    if spec.logprobs is not None and (committed.windows == 0 or committed.logprobs is not None):
        run.logprobs = list(committed.logprobs or [])
    # Bring the text assembler to where the committed windows left it (held-back bytes and
    # stop-sequence prefixes included), emitting nothing.
    run.text.feed(session.replay(committed))
    run.produced = committed.total_tokens
    run.finish = committed.finish_reason
    window = committed.windows
    _take_partial(run, committed)
    while run.finish is None:
        size = window_size(spec, session, run.produced - run.window_tokens)
        if not run.window_tokens:  # not a window its frame began in an earlier attempt
            sink.continuation(window)
        if sink.cancelled:
            run.finish = FinishReason.CANCELLED
        else:
            run.run_window(window, size)
        window += 1
        if run.finish is None and _last_window(spec, window, run.produced):
            run.finish = FinishReason.LENGTH
        run.end_window(window - 1)
    if committed.finish_reason is not None:  # its last window frame carried the rest
        run.text.finish()
    return Generated(
        run.text.text,
        run.finish,
        session.prompt_tokens,
        run.produced,
        window,
        run.logprobs,
    )


def _take_partial(run: _Run, committed: Committed) -> None:
    """A resume inside a window: its tokens so far belong to the window frame to come."""
    partial = committed.partial
    run.window_ids = list(partial.token_ids)
    run.window_tokens = partial.tokens
    run.window_text = [partial.text] if partial.text else []
    run.window_logprobs = list(partial.logprobs)


def _last_window(spec: JobSpec, windows: int, produced: int) -> bool:
    return produced >= spec.max_tokens or (
        spec.max_windows is not None and windows >= spec.max_windows
    )
