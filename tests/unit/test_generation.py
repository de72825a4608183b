"""workers.generation.loop.generate: the token loop, its windows and finish reasons, the frames it
emits, and resuming a job after its committed windows, or inside a window from the tokens its
stream holds (genq.workers.generation.resume)."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from genq.common.frames import (
    ContinuationData,
    ContinuationFrame,
    ResumeData,
    ResumeFrame,
    TokenData,
    TokenFrame,
    WindowData,
    WindowFrame,
)
from genq.common.schemas import SEED_MAX, FinishReason, JobSpec, TokenLogprob, TopLogprob
from genq.common.store.streams import entry_of
from genq.workers.generation.chunks import Chunker
from genq.workers.generation.loop import Generated, TokenSession, generate, window_seed
from genq.workers.generation.resume import Committed, committed
from genq.workers.generation.sampled import Sampled

# Token ids: EOS is 0, ids 1..255 are that one byte (id 104 is b"h"), ids from 256 up are
# pieces of several bytes. The prompt's ids are never decoded.
EOS = 0
MULTI_BYTE = {256: b"ab", 257: b"\xe2\x82"}  # b"\xe2\x82" is the first two bytes of "€"
PROMPT = [1, 72, 105]


def ids(text: str) -> list[int]:
    return list(text.encode())


def piece(token: int) -> bytes:
    if token == EOS:
        return b""
    return MULTI_BYTE.get(token) or bytes([token])


@dataclass
class Call:
    """One `tokens()` call: one window's context, seed and first output position, and the
    tokens drawn for it."""

    context: list[int]
    seed: int
    position: int
    drawn: list[int] = field(default_factory=list)


@dataclass(kw_only=True)
class Backend:
    """What the scripted backends share: a fixed prompt, byte pieces, and a record of calls."""

    n_ctx: int = 4096
    prompt: list[int] = field(default_factory=lambda: list(PROMPT))
    calls: list[Call] = field(default_factory=list)
    sequences: int = 0  # sequences taken (one per job attempt that generates)
    closed: int = 0  # and given back

    def prompt_tokens(self, spec: JobSpec) -> list[int]:
        return list(self.prompt)

    def is_end(self, token: int) -> bool:
        return token == EOS

    def piece(self, token: int) -> bytes:
        return piece(token)

    def draw(self, context: list[int], spec: JobSpec, seed: int, position: int) -> Iterator[int]:
        raise NotImplementedError  # each scripted backend draws its own

    def sequence(self, spec: JobSpec) -> Backend:
        self.sequences += 1
        return self

    def tokens(
        self, context: list[int], spec: JobSpec, seed: int, position: int
    ) -> Generator[Sampled]:
        """What a TokenSequence yields: the drawn tokens, with log probabilities if asked."""
        for token in self.draw(context, spec, seed, position):
            top = spec.logprobs
            yield Sampled(token, None if top is None else self.logprob(token, top))

    def close(self) -> None:
        self.closed += 1

    def session(self, spec: JobSpec) -> TokenSession:
        return TokenSession(self, spec)

    def logprob(self, token: int, top: int) -> TokenLogprob:
        """A made-up distribution: the token at -token/100, its alternatives below it."""
        alternatives = [TopLogprob(token=str(t), logprob=-(t + 1) / 10) for t in range(top)]
        return TokenLogprob(token=str(token), logprob=-token / 100, top=alternatives)

    @property
    def drawn(self) -> list[int]:
        return [token for call in self.calls for token in call.drawn]

    def _record(self, context: list[int], seed: int, position: int) -> Call:
        self.calls.append(Call(list(context), seed, position))
        return self.calls[-1]


@dataclass
class ScriptBackend(Backend):
    """Samples a fixed script whatever the context: each window goes on where the last one
    stopped drawing."""

    script: Iterable[int]
    _source: Iterator[int] = field(init=False)

    def __post_init__(self) -> None:
        self._source = iter(self.script)

    def draw(self, context: list[int], spec: JobSpec, seed: int, position: int) -> Iterator[int]:
        call = self._record(context, seed, position)
        for token in self._source:
            call.drawn.append(token)
            yield token


# What SeededBackend samples: ASCII, UTF-8 lead and continuation bytes (characters split
# across tokens, and across windows), a piece that is never valid UTF-8, multi-byte pieces.
VOCAB = [EOS, *ids("ab "), 0xC3, 0xE2, 0xA9, 0xAC, 0xFF, *MULTI_BYTE]
WEIGHTS = [1] + [4] * (len(VOCAB) - 1)


@dataclass
class SeededBackend(Backend):
    """A stand-in model, as genq's engine is: each token a pure function of the job seed, its
    output position and the context before it (however that context was split between a
    window's start and its tokens), so a wrong context, seed or position gives other tokens."""

    def draw(self, context: list[int], spec: JobSpec, seed: int, position: int) -> Iterator[int]:
        call = self._record(context, seed, position)
        before = list(context)
        while True:
            key = repr((tuple(before), seed, position)).encode()
            rng = random.Random(hashlib.blake2b(key, digest_size=8).digest())
            token = rng.choices(VOCAB, WEIGHTS)[0]
            call.drawn.append(token)
            before.append(token)
            position += 1
            yield token


Event = ContinuationData | TokenData | WindowData


@dataclass
class Frames:
    """A FrameSink that records every frame, in order."""

    events: list[Event] = field(default_factory=list)
    cancel_after_chunks: int | None = None  # a cancel seen with this many chunks published
    cancelled: bool = False

    def token(self, data: TokenData, ending: bool = False) -> None:
        self.events.append(data)
        chunks = sum(isinstance(event, TokenData) for event in self.events)
        self.cancelled = self.cancel_after_chunks is not None and chunks >= self.cancel_after_chunks

    def continuation(self, window: int) -> None:
        self.events.append(ContinuationData(window=window))

    def publish_window(self, data: WindowData) -> None:
        self.events.append(data)


@dataclass
class Run:
    """A job attempt's result, and the frames it emitted."""

    result: Generated
    events: list[Event]

    @property
    def chunks(self) -> list[TokenData]:
        return [event for event in self.events if isinstance(event, TokenData)]

    @property
    def windows(self) -> list[WindowData]:
        return [event for event in self.events if isinstance(event, WindowData)]

    @property
    def chunk_text(self) -> str:
        return "".join(chunk.text for chunk in self.chunks)

    @property
    def chunk_token_ids(self) -> list[int]:
        return [token for chunk in self.chunks for token in chunk.token_ids]

    def committed(self, windows: int) -> Committed:
        """What a checkpoint holds after this run's first `windows` window frames."""
        frames = self.windows[:windows]
        return Committed(
            windows=windows,
            token_ids=[token for frame in frames for token in frame.token_ids],
            text=self.text_of(windows),
            tokens=frames[-1].tokens_total if frames else 0,
            finish_reason=frames[-1].finish_reason if frames else None,
        )

    def text_of(self, windows: int) -> str:
        """The text of this run's first `windows` window frames: what a reader keeps on a
        `resume` frame from that point."""
        return "".join(frame.text for frame in self.windows[:windows])


def run(
    backend: Backend,
    fields: Mapping[str, object] | None = None,
    *,
    chunk_tokens: int = 4,
    committed: Committed | None = None,
    frames: Frames | None = None,
    **spec: object,
) -> Run:
    """Generate a job of `fields` and `spec`, with a clock that never moves, so chunks are
    cut by token count alone; `frames` is the sink (one that never cancels by default)."""
    chunker = Chunker(max_tokens=chunk_tokens, interval_s=3600.0, clock=lambda: 0.0)
    job = JobSpec.model_validate({"prompt": "hi", **(fields or {}), **spec})
    frames = frames or Frames()
    result = generate(backend, job, frames, chunker, committed or Committed())
    return Run(result, frames.events)


def chunks_by_window(out: Run, first: int = 0) -> list[list[TokenData]]:
    """The token chunks of each window, checking the framing: windows first, first + 1, ...
    each as `continuation(k)`, its chunks, `window(k)`, and no chunk outside a window."""
    groups: list[list[TokenData]] = []
    open_window: int | None = None
    for event in out.events:
        if isinstance(event, ContinuationData):
            assert open_window is None
            assert event.window == first + len(groups)
            open_window = event.window
            groups.append([])
        elif isinstance(event, TokenData):
            assert open_window is not None, "a chunk outside any window"
            groups[-1].append(event)
        else:
            assert event.window == open_window
            open_window = None
    assert open_window is None, "a window without its window frame"
    return groups


def endless(text: str) -> Iterator[int]:
    return itertools.cycle(ids(text))


# The token loop (one window unless a test asks for more).


def test_end_of_sequence_finishes_with_stop_and_is_not_counted() -> None:
    backend = ScriptBackend([*ids("hello"), EOS, *ids("junk")])
    out = run(backend)
    assert out.result == Generated("hello", FinishReason.STOP, len(PROMPT), 5, 1)
    assert out.chunk_token_ids == ids("hello")
    assert backend.drawn == [*ids("hello"), EOS]


def test_end_of_sequence_first_finishes_with_stop_and_emits_no_chunks() -> None:
    out = run(ScriptBackend([EOS, *ids("junk")]))
    assert out.result == Generated("", FinishReason.STOP, len(PROMPT), 0, 1)
    assert out.chunks == []


def test_ignore_eos_generates_past_end_of_sequence() -> None:
    out = run(ScriptBackend([*ids("hi"), EOS, *ids("more")]), ignore_eos=True, max_tokens=5)
    assert out.result == Generated("himo", FinishReason.LENGTH, len(PROMPT), 5, 1)
    assert out.chunk_token_ids == [*ids("hi"), EOS, *ids("mo")]


def test_max_tokens_finishes_with_length_after_exactly_max_tokens() -> None:
    backend = ScriptBackend(endless("ab"))
    out = run(backend, max_tokens=7)
    assert out.result == Generated("abababa", FinishReason.LENGTH, len(PROMPT), 7, 1)
    assert len(backend.drawn) == 7  # no token is sampled past the budget


def test_stop_sequence_finishes_with_stop_and_cuts_the_text_before_it() -> None:
    backend = ScriptBackend(endless("hello world "))
    out = run(backend, stop=["wor"])
    assert out.result == Generated("hello ", FinishReason.STOP, len(PROMPT), len("hello wor"), 1)
    assert out.chunk_text == "hello "
    assert out.chunk_token_ids == ids("hello wor")


def test_stop_sequence_on_the_last_allowed_token_finishes_with_stop() -> None:
    out = run(ScriptBackend(endless("abc")), max_tokens=3, stop=["bc"])
    assert out.result == Generated("a", FinishReason.STOP, len(PROMPT), 3, 1)


def test_first_chunk_holds_one_token_then_chunks_fill_to_chunk_size() -> None:
    out = run(ScriptBackend(endless("abcdefghij")), chunk_tokens=3, max_tokens=10)
    assert [len(chunk.token_ids) for chunk in out.chunks] == [1, 3, 3, 3]
    assert [chunk.text for chunk in out.chunks] == ["a", "bcd", "efg", "hij"]


def test_single_token_job_emits_one_chunk_with_that_token() -> None:
    out = run(ScriptBackend(endless("x")), max_tokens=1)
    assert out.chunks == [TokenData(text="x", token_ids=ids("x"))]


def test_text_held_back_for_a_possible_stop_goes_out_in_the_last_chunk() -> None:
    out = run(ScriptBackend([*ids("ok</en"), EOS]), chunk_tokens=1, stop=["</end>"])
    assert out.result.text == "ok</en"
    assert out.chunks[-1].text.endswith("</en")
    assert out.chunk_text == "ok</en"


def test_a_character_split_across_tokens_is_never_split_across_chunks() -> None:
    out = run(ScriptBackend([*ids("é€😀"), EOS]), chunk_tokens=1)
    assert out.chunk_text == out.result.text == "é€😀"
    assert all("\ufffd" not in chunk.text for chunk in out.chunks)
    assert len(out.chunks) == len(ids("é€😀"))


# Pieces that are whole characters, parts of multi-byte ones, or never valid UTF-8.
TOKENS = [EOS, *ids("ab"), *ids("é€"), 0xFF]
FILLER = ids("z")  # what the backend samples after its script: no stop contains it


@settings(max_examples=300, deadline=None)
@given(
    script=st.lists(st.sampled_from(TOKENS), max_size=30),
    max_tokens=st.integers(1, 24),
    room=st.integers(1, 24),
    window_tokens=st.none() | st.integers(1, 30),
    chunk_tokens=st.integers(1, 5),
    ignore_eos=st.booleans(),
    stops=st.lists(
        st.text(alphabet="abé€", min_size=1, max_size=3), max_size=3, unique=True
    ).filter(lambda stops: not any(a != b and a in b for a in stops for b in stops)),
)
def test_chunks_and_windows_concatenate_to_the_result_for_any_script(
    script: list[int],
    max_tokens: int,
    room: int,
    window_tokens: int | None,
    chunk_tokens: int,
    ignore_eos: bool,
    stops: list[str],
) -> None:
    backend = ScriptBackend(
        itertools.chain(script, itertools.cycle(FILLER)), n_ctx=len(PROMPT) + room
    )
    out = run(
        backend,
        chunk_tokens=chunk_tokens,
        max_tokens=max_tokens,
        window_tokens=window_tokens,
        ignore_eos=ignore_eos,
        stop=stops,
    )

    # What the specification says was sampled: up to EOS, a stop sequence, or the budget
    # (windows slide over the context, so a full context does not end the job).
    sampled: list[int] = []
    ended = False
    for token in itertools.chain(script, itertools.cycle(FILLER)):
        if token == EOS and not ignore_eos:
            ended = True
            break
        sampled.append(token)
        decoded = b"".join(piece(t) for t in sampled).decode("utf-8", "replace")
        if any(stop in decoded for stop in stops) or len(sampled) == max_tokens:
            break
    decoded = b"".join(piece(t) for t in sampled).decode("utf-8", "replace")
    hits = [i for i in (decoded.find(stop) for stop in stops) if i >= 0]

    assert out.chunk_token_ids == sampled
    assert [token for frame in out.windows for token in frame.token_ids] == sampled
    assert out.result.completion_tokens == len(sampled)
    assert out.result.text == out.chunk_text == (decoded[: min(hits)] if hits else decoded)
    assert "".join(frame.text for frame in out.windows) == out.result.text
    assert out.result.finish_reason == (FinishReason.STOP if ended or hits else FinishReason.LENGTH)
    assert len(chunks_by_window(out)) == out.result.windows
    if out.chunks:
        assert len(out.chunks[0].token_ids) == 1
        assert all(len(chunk.token_ids) <= chunk_tokens for chunk in out.chunks)
        assert all(chunk.text or chunk.token_ids for chunk in out.chunks)


# Continuation windows.


# (room, window_tokens, max_tokens): windows that fit the room, a job longer than the room.
LONGER_THAN_THE_CONTEXT = st.integers(1, 12).flatmap(
    lambda room: st.tuples(st.just(room), st.integers(1, room), st.integers(room + 1, 60))
)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, SEED_MAX), sizes=LONGER_THAN_THE_CONTEXT)
@example(seed=7, sizes=(4, 2, 5))  # 3 windows: 2 + 2 + 1 tokens
def test_a_job_longer_than_the_context_runs_in_windows_framed_in_order(
    seed: int, sizes: tuple[int, int, int]
) -> None:
    room, window_tokens, max_tokens = sizes
    backend = SeededBackend(n_ctx=len(PROMPT) + room)
    out = run(
        backend, seed=seed, window_tokens=window_tokens, max_tokens=max_tokens, ignore_eos=True
    )

    windows = math.ceil(max_tokens / window_tokens)
    assert out.result.windows == len(out.windows) == windows
    assert out.result.finish_reason == FinishReason.LENGTH
    assert out.result.completion_tokens == max_tokens
    assert [frame.window for frame in out.windows] == list(range(windows))
    groups = chunks_by_window(out)
    for frame, chunks in zip(out.windows, groups, strict=True):
        assert [token for chunk in chunks for token in chunk.token_ids] == frame.token_ids
        assert "".join(chunk.text for chunk in chunks) == frame.text
    assert [token for frame in out.windows for token in frame.token_ids] == backend.drawn
    assert "".join(frame.text for frame in out.windows) == out.result.text == out.chunk_text
    totals = itertools.accumulate(len(frame.token_ids) for frame in out.windows)
    assert [frame.tokens_total for frame in out.windows] == list(totals)
    assert [frame.finish_reason for frame in out.windows] == [None] * (windows - 1) + [
        FinishReason.LENGTH
    ]


@settings(max_examples=150, deadline=None)
@given(
    seed=st.integers(0, SEED_MAX),
    room=st.integers(1, 12),
    window_tokens=st.none() | st.integers(1, 14),
    max_tokens=st.integers(1, 40),
)
def test_each_window_sees_the_prompt_and_the_latest_output_that_fits_the_job_seed_and_position(
    seed: int, room: int, window_tokens: int | None, max_tokens: int
) -> None:
    n_ctx = len(PROMPT) + room
    backend = SeededBackend(n_ctx=n_ctx)
    out = run(
        backend, seed=seed, window_tokens=window_tokens, max_tokens=max_tokens, ignore_eos=True
    )

    assert len(backend.calls) == len(out.windows)
    output: list[int] = []
    for call, frame in zip(backend.calls, out.windows, strict=True):
        size = len(frame.token_ids)  # every window is full: no EOS, no stop
        assert call.seed == seed and call.position == len(output)
        assert call.context[: len(PROMPT)] == PROMPT
        assert len(call.context) <= n_ctx - size
        kept = min(len(output), n_ctx - size - len(PROMPT))  # as much as fits
        assert call.context[len(PROMPT) :] == output[len(output) - kept :]
        assert call.drawn == frame.token_ids  # nothing sampled past the window
        output += frame.token_ids


def test_default_window_is_half_the_room_after_the_prompt() -> None:
    backend = SeededBackend(n_ctx=len(PROMPT) + 10)
    out = run(backend, seed=1, max_tokens=12, ignore_eos=True)
    assert [len(frame.token_ids) for frame in out.windows] == [5, 5, 2]
    output = backend.drawn
    assert [call.context for call in backend.calls] == [
        PROMPT,
        PROMPT + output[:5],
        PROMPT + output[2:10],  # a window of 2 leaves room for the latest 8 tokens
    ]


def test_window_tokens_larger_than_the_room_are_capped_at_the_room() -> None:
    backend = SeededBackend(n_ctx=len(PROMPT) + 6)
    out = run(backend, seed=1, window_tokens=100, max_tokens=20, ignore_eos=True)
    assert [len(frame.token_ids) for frame in out.windows] == [6, 6, 6, 2]
    assert [call.context for call in backend.calls[:3]] == [PROMPT] * 3  # no room to keep any
    assert backend.calls[3].context == PROMPT + backend.drawn[14:18]
    assert out.result.completion_tokens == 20


@pytest.mark.parametrize("name", ["max_windows", "max_continuations"])
def test_max_windows_finishes_with_length_after_that_many_windows(name: str) -> None:
    backend = SeededBackend()
    out = run(backend, {name: 2}, seed=1, window_tokens=3, max_tokens=100, ignore_eos=True)
    assert out.result.finish_reason == FinishReason.LENGTH
    assert (out.result.windows, out.result.completion_tokens) == (2, 6)
    assert [frame.finish_reason for frame in out.windows] == [None, FinishReason.LENGTH]
    assert len(backend.drawn) == 6


def test_a_character_split_across_windows_goes_out_in_the_window_that_completes_it() -> None:
    a, e1, e2 = ids("aé")
    out = run(ScriptBackend(endless("aé")), window_tokens=2, max_tokens=6)
    assert [frame.token_ids for frame in out.windows] == [[a, e1], [e2, a], [e1, e2]]
    assert [frame.text for frame in out.windows] == ["a", "éa", "é"]
    assert out.result == Generated("aéaé", FinishReason.LENGTH, len(PROMPT), 6, 3)


def test_text_held_back_for_a_stop_at_a_window_end_goes_out_in_a_later_window() -> None:
    out = run(ScriptBackend(endless("hello world ")), window_tokens=4, max_tokens=12, stop=["lo!"])
    assert [frame.text for frame in out.windows] == ["hel", "lo wo", "rld "]
    assert out.result.text == out.chunk_text == "hello world "


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, SEED_MAX),
    room=st.integers(1, 12),
    window_tokens=st.none() | st.integers(1, 14),
    max_tokens=st.integers(1, 40),
    max_windows=st.none() | st.integers(1, 8),
    stops=st.lists(st.text(alphabet="ab é€", min_size=1, max_size=3), max_size=2),
    ignore_eos=st.booleans(),
    chunk_tokens=st.integers(1, 4),
    data=st.data(),
)
def test_a_resumed_job_computes_what_the_uninterrupted_run_would_have(
    seed: int,
    room: int,
    window_tokens: int | None,
    max_tokens: int,
    max_windows: int | None,
    stops: list[str],
    ignore_eos: bool,
    chunk_tokens: int,
    data: st.DataObject,
) -> None:
    spec: dict[str, object] = {
        "seed": seed,
        "window_tokens": window_tokens,
        "max_tokens": max_tokens,
        "max_windows": max_windows,
        "stop": stops,
        "ignore_eos": ignore_eos,
    }
    first_backend = SeededBackend(n_ctx=len(PROMPT) + room)
    first = run(first_backend, spec, chunk_tokens=chunk_tokens)
    k = data.draw(st.integers(0, first.result.windows - 1), "resume after windows")

    backend = SeededBackend(n_ctx=len(PROMPT) + room)
    resumed = run(backend, spec, chunk_tokens=chunk_tokens, committed=first.committed(k))

    assert resumed.result == first.result
    assert resumed.windows == first.windows[k:]
    assert backend.calls == first_backend.calls[k:]  # the same contexts and seeds
    assert len(chunks_by_window(resumed, first=k)) == first.result.windows - k
    assert first.text_of(k) + resumed.chunk_text == first.result.text


JOB = "job-1"


def stream_of(
    events: Iterable[Event], epoch: int = 0, resume: ResumeData | None = None
) -> list[tuple[str, str]]:
    """The stream entries the relay writes for an attempt's frames, numbered from 1."""
    frames: list[TokenFrame | WindowFrame | ContinuationFrame | ResumeFrame] = []
    if resume is not None:
        frames.append(ResumeFrame(job_id=JOB, epoch=epoch, seq=1, data=resume))
    for event in events:
        seq = len(frames) + 1
        if isinstance(event, TokenData):
            frames.append(TokenFrame(job_id=JOB, epoch=epoch, seq=seq, data=event))
        elif isinstance(event, WindowData):
            frames.append(WindowFrame(job_id=JOB, epoch=epoch, seq=seq, data=event))
        else:
            frames.append(ContinuationFrame(job_id=JOB, epoch=epoch, seq=seq, data=event))
    return [(f"{f.epoch}-{f.seq}", f.model_dump_json()) for f in frames]


def cuts(out: Run) -> list[int]:
    """Where an attempt's stream may end when its worker dies: before any chunk or window
    frame (a window's last chunk can be there without its frame)."""
    kinds = (TokenData, WindowData)
    return [i for i, event in enumerate(out.events) if isinstance(event, kinds)] + [len(out.events)]


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, SEED_MAX),
    room=st.integers(1, 12),
    window_tokens=st.none() | st.integers(1, 14),
    max_tokens=st.integers(1, 40),
    stops=st.lists(st.text(alphabet="ab é€", min_size=1, max_size=3), max_size=2),
    logprobs=st.none() | st.integers(0, 2),
    chunk_tokens=st.integers(1, 4),
    data=st.data(),
)
def test_a_job_resumed_inside_a_window_from_its_stream_computes_the_uninterrupted_run(
    seed: int,
    room: int,
    window_tokens: int | None,
    max_tokens: int,
    stops: list[str],
    logprobs: int | None,
    chunk_tokens: int,
    data: st.DataObject,
) -> None:
    """Every chunk that reached the stream is committed, but for an attempt's last frame when
    that is a chunk: a resume continues after them, inside their window, and its frames
    complete the window."""
    spec: dict[str, object] = {
        "seed": seed,
        "window_tokens": window_tokens,
        "max_tokens": max_tokens,
        "stop": stops,
        "ignore_eos": True,
        "logprobs": logprobs,
    }
    first = run(SeededBackend(n_ctx=len(PROMPT) + room), spec, chunk_tokens=chunk_tokens)
    events = first.events[: data.draw(st.sampled_from(cuts(first)), "events in the stream")]
    chunks = [event for event in events if isinstance(event, TokenData)]
    windows = sum(isinstance(event, WindowData) for event in events)
    if events and isinstance(events[-1], TokenData):
        chunks = chunks[:-1]  # the attempt's last frame, a chunk: computed again
    entries = [entry_of(frame) for frame in first.windows[:windows]]
    point = committed(entries, stream_of(events), JOB)
    assert point.all_token_ids == [t for c in chunks for t in c.token_ids]
    assert point.text + point.partial.text == "".join(c.text for c in chunks)

    if point.finish_reason is not None:
        return  # the job had ended: nothing to resume
    resumed = run(
        SeededBackend(n_ctx=len(PROMPT) + room), spec, chunk_tokens=chunk_tokens, committed=point
    )
    assert resumed.result == first.result
    assert resumed.windows == first.windows[windows:]
    assert point.text + point.partial.text + resumed.chunk_text == first.result.text


def test_a_later_attempts_resume_frame_cuts_the_partial_window_back_to_what_it_kept() -> None:
    first = run(
        SeededBackend(n_ctx=len(PROMPT) + 40),
        {"seed": 3},
        window_tokens=20,
        max_tokens=20,
        ignore_eos=True,
    )
    assert len(first.chunks) > 4  # the first token alone, then chunks of 4, one window
    # Attempt 0 streamed 3 chunks; attempt 1 kept 2 of them (the 3rd, its last frame, could
    # have been an ending chunk) and streamed two more before it died too: the last of
    # those is not committed either.
    stream = stream_of(first.events[:4])
    kept = sum(c.count for c in first.chunks[:2])
    chars = len(first.chunks[0].text + first.chunks[1].text)
    resume = ResumeData(from_window=0, committed_tokens=kept, committed_chars=chars)
    stream += stream_of(first.chunks[2:4], epoch=1, resume=resume)
    point = committed([], stream, JOB)
    assert list(point.partial.token_ids) == [t for c in first.chunks[:3] for t in c.token_ids]


def test_a_hole_in_the_stream_leaves_the_window_to_be_computed_again() -> None:
    first = run(
        SeededBackend(n_ctx=len(PROMPT) + 40),
        {"seed": 3},
        window_tokens=20,
        max_tokens=20,
        ignore_eos=True,
    )
    stream = stream_of(first.events[:4])
    del stream[2]  # the 2nd chunk never reached the stream (no relay ran)
    assert not committed([], stream, JOB).partial.token_ids
    stream = stream_of(first.events[:4])
    stream[2] = (stream[2][0], "not a frame")
    assert not committed([], stream, JOB).partial.token_ids


def test_a_remote_models_chunks_without_token_ids_resume_from_the_window_start() -> None:
    chunk = TokenData(text="abc", token_ids=[], tokens=3)
    stream = stream_of([ContinuationData(window=0), chunk])
    point = committed([], stream, JOB)
    assert point.partial.tokens == 0 and point.total_chars == 0


def test_a_stop_sequence_spanning_the_resume_point_still_ends_the_text() -> None:
    script = ids("hello world ")
    spec: dict[str, object] = {"window_tokens": 4, "stop": ["lo w"]}
    first = run(ScriptBackend(script), spec)
    assert [frame.text for frame in first.windows] == ["hel", ""]  # "l" held back at the end

    committed = first.committed(1)
    resumed = run(ScriptBackend(script[len(committed.token_ids) :]), spec, committed=committed)
    assert resumed.result == first.result == Generated("hel", FinishReason.STOP, 3, 7, 2)
    assert first.text_of(1) + resumed.chunk_text == "hel"


@pytest.mark.parametrize(
    ("script", "spec"),
    [
        pytest.param([*ids("xyzxy"), EOS], {}, id="end-of-sequence"),
        pytest.param(ids("xyzxyab"), {"stop": ["ab"]}, id="stop-sequence"),
        pytest.param(ids("xyzxy"), {"max_tokens": 5}, id="max-tokens"),
    ],
)
def test_resuming_after_the_last_window_generates_nothing_and_returns_the_result(
    script: list[int], spec: dict[str, object]
) -> None:
    first = run(ScriptBackend(script), spec, window_tokens=3)
    windows = first.result.windows
    assert first.windows[-1].finish_reason is not None

    backend = ScriptBackend(endless("junk"))
    resumed = run(backend, spec, committed=first.committed(windows), window_tokens=3)
    assert resumed.result == first.result
    assert backend.calls == []
    assert resumed.events == []


@pytest.mark.parametrize(
    ("script", "spec"),
    [
        pytest.param([*ids("ok</en"), EOS], {"stop": ["</end>"]}, id="stop-prefix-then-eos"),
        pytest.param([*ids("ok"), 0xC3], {"max_tokens": 3}, id="half-a-character-then-length"),
    ],
)
def test_resuming_after_the_last_window_emits_nothing_that_window_carried(
    script: list[int], spec: dict[str, object]
) -> None:
    first = run(ScriptBackend(script), spec, window_tokens=2)
    windows = first.result.windows
    assert first.windows[-1].finish_reason is not None

    resumed = run(ScriptBackend([]), spec, committed=first.committed(windows), window_tokens=2)
    assert resumed.result == first.result
    assert first.text_of(windows) + resumed.chunk_text == first.result.text
    assert resumed.chunks == []


def test_a_remote_window_seed_is_the_job_seed_then_a_fixed_hash_of_seed_and_window() -> None:
    # Fixed values: a window resumed on another worker, process or release draws the same.
    assert [window_seed(7, k) for k in range(4)] == [7, 1207947808, 3697423975, 442239123]
    assert len({window_seed(7, k) for k in range(1000)}) == 1000


@given(seed=st.integers(0, SEED_MAX), window=st.integers(0, 1_000_000))
def test_window_seeds_are_valid_sampler_seeds(seed: int, window: int) -> None:
    assert 0 <= window_seed(seed, window) <= SEED_MAX


# Cancelling: seen after a chunk is published, or when a window starts.


@pytest.mark.parametrize(
    ("k", "window_tokens"),
    [(1, None), (2, None), (3, None), (2, 5), (3, 5), (4, 3)],
    ids=["1st", "2nd", "3rd", "2nd-at-a-window-end", "3rd-in-window-2", "4th-at-window-3-end"],
)
def test_a_cancel_seen_after_the_kth_chunk_ends_the_job_with_cancelled(
    k: int, window_tokens: int | None
) -> None:
    backend = ScriptBackend(endless("abcdefg"))
    frames = Frames(cancel_after_chunks=k)
    out = run(backend, frames=frames, max_tokens=1000, window_tokens=window_tokens)

    assert out.result.finish_reason == FinishReason.CANCELLED
    assert len(out.chunks) == k  # nothing after the chunk that saw the cancel
    assert backend.drawn == out.chunk_token_ids  # and nothing sampled past it
    assert out.windows[-1].finish_reason == FinishReason.CANCELLED
    assert [frame.finish_reason for frame in out.windows[:-1]] == [None] * (len(out.windows) - 1)
    assert out.chunk_text == out.result.text == "".join(frame.text for frame in out.windows)
    assert out.result.completion_tokens == len(out.chunk_token_ids) == out.windows[-1].tokens_total
    assert len(chunks_by_window(out)) == out.result.windows == len(out.windows)


def test_a_cancel_seen_after_the_first_chunk_ends_the_job_after_its_first_token() -> None:
    out = run(ScriptBackend(endless("xyz")), frames=Frames(cancel_after_chunks=1))
    assert out.result == Generated("x", FinishReason.CANCELLED, len(PROMPT), 1, 1)
    assert out.events == [
        ContinuationData(window=0),
        TokenData(text="x", token_ids=ids("x")),
        WindowData(
            window=0,
            token_ids=ids("x"),
            text="x",
            tokens_total=1,
            finish_reason=FinishReason.CANCELLED,
        ),
    ]


def test_a_cancel_seen_with_a_windows_last_chunk_ends_the_job_at_the_next_window_start() -> None:
    backend = ScriptBackend(endless("ab"))
    out = run(backend, frames=Frames(cancel_after_chunks=2), window_tokens=3, max_tokens=100)
    # Window 0: chunk "a", then "ba" flushed at its end, which sees the cancel.
    assert [chunk.text for chunk in out.chunks] == ["a", "ba"]
    assert out.events[-2:] == [
        ContinuationData(window=1),
        WindowData(
            window=1, token_ids=[], text="", tokens_total=3, finish_reason=FinishReason.CANCELLED
        ),
    ]
    assert out.result == Generated("aba", FinishReason.CANCELLED, len(PROMPT), 3, 2)
    assert len(backend.calls) == 1  # the cancelled window samples nothing


def test_a_cancel_set_before_the_job_starts_emits_one_empty_cancelled_window() -> None:
    backend = ScriptBackend(endless("abc"))
    out = run(backend, frames=Frames(cancelled=True))
    assert out.events == [
        ContinuationData(window=0),
        WindowData(
            window=0, token_ids=[], text="", tokens_total=0, finish_reason=FinishReason.CANCELLED
        ),
    ]
    assert out.chunks == []
    assert out.result == Generated("", FinishReason.CANCELLED, len(PROMPT), 0, 1)
    assert backend.calls == []


def test_resuming_a_job_committed_as_cancelled_generates_nothing_and_stays_cancelled() -> None:
    first = run(
        ScriptBackend(endless("abc")), frames=Frames(cancel_after_chunks=2), window_tokens=2
    )
    assert first.result.finish_reason == FinishReason.CANCELLED
    committed = first.committed(len(first.windows))
    assert committed.finish_reason == FinishReason.CANCELLED

    backend = ScriptBackend(endless("junk"))
    resumed = run(backend, committed=committed, window_tokens=2)
    assert resumed.result == first.result
    assert resumed.result.finish_reason == FinishReason.CANCELLED
    assert resumed.events == []
    assert backend.calls == []


def test_resuming_from_a_cancelled_checkpoint_returns_its_text_and_tokens() -> None:
    committed = Committed(
        windows=2,
        token_ids=ids("abcd"),
        text="abcd",
        tokens=4,
        finish_reason=FinishReason.CANCELLED,
    )
    backend = ScriptBackend(endless("junk"))
    resumed = run(backend, committed=committed)
    assert resumed.result == Generated("abcd", FinishReason.CANCELLED, len(PROMPT), 4, 2)
    assert resumed.events == []
    assert backend.calls == []


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, SEED_MAX),
    k=st.integers(1, 12),
    room=st.integers(1, 12),
    window_tokens=st.none() | st.integers(1, 14),
    chunk_tokens=st.integers(1, 5),
)
def test_a_cancel_ends_any_job_with_its_chunks_and_windows_agreeing_on_the_text(
    seed: int, k: int, room: int, window_tokens: int | None, chunk_tokens: int
) -> None:
    backend = SeededBackend(n_ctx=len(PROMPT) + room)
    out = run(
        backend,
        frames=Frames(cancel_after_chunks=k),
        chunk_tokens=chunk_tokens,
        seed=seed,
        window_tokens=window_tokens,
        max_tokens=1000,
        ignore_eos=True,
    )

    assert out.result.finish_reason == FinishReason.CANCELLED
    assert [frame.finish_reason for frame in out.windows] == [None] * (len(out.windows) - 1) + [
        FinishReason.CANCELLED
    ]
    assert all(chunk.token_ids for chunk in out.chunks[:k])
    # After the k-th chunk at most the text it held back (a partial character), no tokens.
    assert [chunk.token_ids for chunk in out.chunks[k:]] in ([], [[]])
    assert backend.drawn == out.chunk_token_ids
    assert [token for frame in out.windows for token in frame.token_ids] == out.chunk_token_ids
    assert out.result.completion_tokens == len(out.chunk_token_ids)
    assert out.chunk_text == out.result.text == "".join(frame.text for frame in out.windows)
    assert len(chunks_by_window(out)) == out.result.windows


# Log probabilities.


def test_logprobs_go_out_with_their_tokens_and_the_result_holds_the_same() -> None:
    out = run(ScriptBackend(endless("abc")), max_tokens=10, logprobs=2)
    streamed = [lp for chunk in out.chunks for lp in chunk.logprobs or []]
    assert all(len(chunk.logprobs or []) == chunk.count for chunk in out.chunks)
    assert streamed == out.result.logprobs
    assert [lp.token for lp in streamed] == [str(t) for t in ids("abcabcabca")]
    assert all(len(lp.top) == 2 for lp in streamed)


def test_without_logprobs_neither_chunks_nor_result_carry_them() -> None:
    out = run(ScriptBackend(endless("abc")), max_tokens=10)
    assert all(chunk.logprobs is None for chunk in out.chunks)
    assert out.result.logprobs is None


def test_window_frames_carry_their_logprobs_and_a_resume_completes_the_result_with_them() -> None:
    first = run(ScriptBackend(endless("abcd")), max_tokens=8, window_tokens=4, logprobs=0)
    assert [lp for w in first.windows for lp in w.logprobs or []] == first.result.logprobs
    committed = first.committed(1)
    committed = replace(committed, logprobs=first.windows[0].logprobs)
    resumed = run(
        ScriptBackend(endless("abcd")),
        max_tokens=8,
        window_tokens=4,
        logprobs=0,
        committed=committed,
    )
    assert all(len(chunk.logprobs or []) == chunk.count for chunk in resumed.chunks)
    assert resumed.result.logprobs == first.result.logprobs


def test_a_resume_without_the_committed_logprobs_gives_a_result_without_them() -> None:
    first = run(ScriptBackend(endless("abcd")), max_tokens=8, window_tokens=4, logprobs=0)
    resumed = run(
        ScriptBackend(endless("abcd")),
        max_tokens=8,
        window_tokens=4,
        logprobs=0,
        committed=first.committed(1),
    )
    assert resumed.result.logprobs is None  # partial lists would misalign with the text


@dataclass
class TranscriptBackend(ScriptBackend):
    """A backend whose rendering ends the assistant's turn at the next role line, as a chat
    rendered as a transcript does (genq.common.prompts.implicit_stops)."""

    def session(self, spec: JobSpec) -> TokenSession:
        session = TokenSession(self, spec)
        session.stops = ["\nuser:", "\nassistant:"]
        return session


def test_a_sessions_own_stops_end_the_text_and_are_never_shown() -> None:
    out = run(TranscriptBackend(endless(" Paris.\nuser: and Spain?")), max_tokens=40, stop=["!"])
    assert (out.result.text, out.result.finish_reason) == (" Paris.", FinishReason.STOP)
    assert out.chunk_text == " Paris."  # the held-back newline went with the stop
