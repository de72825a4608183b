"""workers.generation.generate: the token loop, its finish reasons and the chunks it emits."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from common.frames import TokenData
from common.schemas import FinishReason, JobSpec
from workers.chunks import Chunker
from workers.generation import Generated, generate

EOS = 0  # every other token id is one byte: id 104 is b"h"
PROMPT = [1, 72, 105]


def ids(text: str) -> list[int]:
    return list(text.encode())


@dataclass
class ScriptedBackend:
    """A TokenBackend that samples a fixed script and records what was drawn from it."""

    script: Iterable[int]
    n_ctx: int = 4096
    prompt: list[int] = field(default_factory=lambda: list(PROMPT))
    drawn: list[int] = field(default_factory=list)

    def prompt_tokens(self, spec: JobSpec) -> list[int]:
        return list(self.prompt)

    def tokens(self, prompt: list[int], spec: JobSpec) -> Iterator[int]:
        assert prompt == self.prompt
        for token in self.script:
            self.drawn.append(token)
            yield token

    def is_end(self, token: int) -> bool:
        return token == EOS

    def piece(self, token: int) -> bytes:
        return b"" if token == EOS else bytes([token])


def endless(text: str) -> Iterator[int]:
    return itertools.cycle(ids(text))


@dataclass
class Run:
    result: Generated
    chunks: list[TokenData]

    @property
    def chunk_text(self) -> str:
        return "".join(chunk.text for chunk in self.chunks)

    @property
    def chunk_token_ids(self) -> list[int]:
        return [token for chunk in self.chunks for token in chunk.token_ids]


def run(backend: ScriptedBackend, chunk_tokens: int = 4, **spec: object) -> Run:
    """Generate with a clock that never moves, so chunks are cut by token count alone."""
    chunks: list[TokenData] = []
    chunker = Chunker(max_tokens=chunk_tokens, interval_s=3600.0, clock=lambda: 0.0)
    job = JobSpec.model_validate({"prompt": "hi", **spec})
    return Run(generate(backend, job, chunks.append, chunker), chunks)


def test_end_of_sequence_finishes_with_stop_and_is_not_counted() -> None:
    backend = ScriptedBackend([*ids("hello"), EOS, *ids("junk")])
    out = run(backend)
    assert out.result == Generated("hello", FinishReason.STOP, len(PROMPT), 5)
    assert out.chunk_token_ids == ids("hello")
    assert backend.drawn == [*ids("hello"), EOS]


def test_end_of_sequence_first_finishes_with_stop_and_emits_nothing() -> None:
    out = run(ScriptedBackend([EOS, *ids("junk")]))
    assert out.result == Generated("", FinishReason.STOP, len(PROMPT), 0)
    assert out.chunks == []


def test_ignore_eos_generates_past_end_of_sequence() -> None:
    out = run(ScriptedBackend([*ids("hi"), EOS, *ids("more")]), ignore_eos=True, max_tokens=5)
    assert out.result == Generated("himo", FinishReason.LENGTH, len(PROMPT), 5)
    assert out.chunk_token_ids == [*ids("hi"), EOS, *ids("mo")]


def test_max_tokens_finishes_with_length_after_exactly_max_tokens() -> None:
    backend = ScriptedBackend(endless("ab"))
    out = run(backend, max_tokens=7)
    assert out.result == Generated("abababa", FinishReason.LENGTH, len(PROMPT), 7)
    assert len(backend.drawn) == 7  # no token is sampled past the budget


def test_full_context_finishes_with_length() -> None:
    backend = ScriptedBackend(endless("ab"), n_ctx=len(PROMPT) + 4)
    out = run(backend, max_tokens=100)
    assert out.result.finish_reason == FinishReason.LENGTH
    assert out.result.completion_tokens == 4
    assert len(out.chunk_token_ids) == 4


def test_stop_sequence_finishes_with_stop_and_cuts_the_text_before_it() -> None:
    backend = ScriptedBackend(endless("hello world "))
    out = run(backend, stop=["wor"])
    assert out.result == Generated("hello ", FinishReason.STOP, len(PROMPT), len("hello wor"))
    assert out.chunk_text == "hello "
    assert out.chunk_token_ids == ids("hello wor")


def test_stop_sequence_on_the_last_allowed_token_finishes_with_stop() -> None:
    out = run(ScriptedBackend(endless("abc")), max_tokens=3, stop=["bc"])
    assert out.result == Generated("a", FinishReason.STOP, len(PROMPT), 3)


def test_first_chunk_holds_one_token_then_chunks_fill_to_chunk_size() -> None:
    out = run(ScriptedBackend(endless("abcdefghij")), chunk_tokens=3, max_tokens=10)
    assert [len(chunk.token_ids) for chunk in out.chunks] == [1, 3, 3, 3]
    assert [chunk.text for chunk in out.chunks] == ["a", "bcd", "efg", "hij"]


def test_single_token_job_emits_one_chunk_with_that_token() -> None:
    out = run(ScriptedBackend(endless("x")), max_tokens=1)
    assert out.chunks == [TokenData(text="x", token_ids=ids("x"))]


def test_text_held_back_for_a_possible_stop_goes_out_in_the_last_chunk() -> None:
    out = run(ScriptedBackend([*ids("ok</en"), EOS]), chunk_tokens=1, stop=["</end>"])
    assert out.result.text == "ok</en"
    assert out.chunks[-1].text.endswith("</en")
    assert out.chunk_text == "ok</en"


def test_a_character_split_across_tokens_is_never_split_across_chunks() -> None:
    out = run(ScriptedBackend([*ids("é€😀"), EOS]), chunk_tokens=1)
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
    chunk_tokens=st.integers(1, 5),
    ignore_eos=st.booleans(),
    stops=st.lists(
        st.text(alphabet="abé€", min_size=1, max_size=3), max_size=3, unique=True
    ).filter(lambda stops: not any(a != b and a in b for a in stops for b in stops)),
)
def test_chunks_concatenate_to_the_result_for_any_script(
    script: list[int],
    max_tokens: int,
    room: int,
    chunk_tokens: int,
    ignore_eos: bool,
    stops: list[str],
) -> None:
    backend = ScriptedBackend(itertools.chain(script, itertools.cycle(FILLER)))
    backend.n_ctx = len(PROMPT) + room
    out = run(backend, chunk_tokens, max_tokens=max_tokens, ignore_eos=ignore_eos, stop=stops)

    # What the specification says was sampled: up to EOS, a stop sequence, or the budget.
    sampled: list[int] = []
    ended = False
    for token in itertools.chain(script, itertools.cycle(FILLER)):
        if token == EOS and not ignore_eos:
            ended = True
            break
        sampled.append(token)
        decoded = b"".join(backend.piece(t) for t in sampled).decode("utf-8", "replace")
        if any(stop in decoded for stop in stops) or len(sampled) == min(max_tokens, room):
            break
    decoded = b"".join(backend.piece(t) for t in sampled).decode("utf-8", "replace")
    hits = [i for i in (decoded.find(stop) for stop in stops) if i >= 0]

    assert out.chunk_token_ids == sampled
    assert out.result.completion_tokens == len(sampled)
    assert out.result.text == out.chunk_text == (decoded[: min(hits)] if hits else decoded)
    assert out.result.finish_reason == (FinishReason.STOP if ended or hits else FinishReason.LENGTH)
    if out.chunks:
        assert len(out.chunks[0].token_ids) == 1
        assert all(len(chunk.token_ids) <= chunk_tokens for chunk in out.chunks)
        assert all(chunk.text or chunk.token_ids for chunk in out.chunks)
