"""genq.workers.generation.text.TextAssembler: token bytes in, final text out, incrementally."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import example, given, settings
from hypothesis import strategies as st

from genq.workers.generation.text import TextAssembler

REPLACEMENT = "\ufffd"

# Byte fragments that make the interesting cases frequent: whole multi-byte characters,
# truncated ones, stray continuation bytes, bytes that never occur in UTF-8, a surrogate.
FRAGMENTS = [
    b"a",
    b"b",
    b"ab",
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    "€".encode()[:2],
    "😀".encode()[:3],
    b"\x80",
    b"\xff",
    b"\xed\xa0\x80",
]
# Stops drawn from the characters those fragments decode to, so that stops hit often.
STOP_ALPHABET = "abé€😀" + REPLACEMENT

any_bytes = st.one_of(
    st.binary(max_size=64),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=3)), max_size=24).map(
        b"".join
    ),
)


@st.composite
def splits(draw: st.DrawFn, data: st.SearchStrategy[bytes] = any_bytes) -> list[bytes]:
    """Some bytes cut into pieces at arbitrary points (empty pieces included)."""
    blob = draw(data)
    cuts = sorted(draw(st.lists(st.integers(0, len(blob)), max_size=len(blob) + 2)))
    bounds = [0, *cuts, len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds)]


def _substring_free(stops: list[str]) -> bool:
    return not any(a != b and a in b for a in stops for b in stops)


# Where no stop lies inside another, "the earliest occurrence" is unambiguous: the occurrence
# that starts first is also the one that is complete first.
stop_sets = st.lists(
    st.text(alphabet=STOP_ALPHABET, min_size=1, max_size=3), min_size=1, max_size=3, unique=True
).filter(_substring_free)

fuzz = settings(max_examples=300, deadline=None)


def reference(pieces: Sequence[bytes]) -> str:
    return b"".join(pieces).decode("utf-8", "replace")


def cut_before_first_stop(text: str, stops: Sequence[str]) -> str:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(hits)] if hits else text


def assemble(pieces: Sequence[bytes], stops: Sequence[str] = ()) -> tuple[list[str], TextAssembler]:
    """Feed every piece, then finish; returns each call's output and the assembler."""
    assembler = TextAssembler(stops)
    outputs = [assembler.feed(piece) for piece in pieces]
    outputs.append(assembler.finish())
    return outputs, assembler


@fuzz
@given(pieces=splits())
@example(pieces=[b"\xe2", b"\x82", b"\xac"])
@example(pieces=[b"\xf0\x9f", b"x"])
@example(pieces=[b"\xed", b"\xa0\x80"])
@example(pieces=[b"a\xe2\x82"])
def test_without_stops_any_split_decodes_like_one_shot(pieces: list[bytes]) -> None:
    outputs, assembler = assemble(pieces)
    assert "".join(outputs) == assembler.text == reference(pieces)
    assert not assembler.stopped


@fuzz
@given(pieces=splits(), stops=stop_sets)
@example(pieces=[b"x\xc3", b"\xa9", b"!"], stops=["é!"])
@example(pieces=[b"a", b"", b"b"], stops=["ab"])
@example(pieces=[b"\xff", b"a"], stops=[REPLACEMENT + "a"])
def test_with_stops_text_is_cut_before_the_first_stop_for_any_split(
    pieces: list[bytes], stops: list[str]
) -> None:
    expected = cut_before_first_stop(reference(pieces), stops)
    assembler = TextAssembler(stops)
    released = ""
    for piece in pieces:
        released += assembler.feed(piece)
        # Released text is final: it never reaches into the stop sequence's occurrence.
        assert expected.startswith(released)
    released += assembler.finish()
    assert released == assembler.text == expected
    assert assembler.stopped == any(stop in reference(pieces) for stop in stops)


def test_stop_sequence_split_across_pieces_is_caught() -> None:
    outputs, assembler = assemble([b"answer</e", b"n", b"d> trailing"], stops=["</end>"])
    assert outputs == ["answer", "", "", ""]
    assert assembler.text == "answer"
    assert assembler.stopped


def test_stop_sequence_spanning_a_split_multibyte_character_is_caught() -> None:
    outputs, assembler = assemble([b"caf\xc3", b"\xa9", b"! more"], stops=["é!"])
    assert "".join(outputs) == assembler.text == "caf"
    assert assembler.stopped


def test_possible_stop_prefix_is_held_back_then_released_when_it_diverges() -> None:
    assembler = TextAssembler(["world"])
    assert assembler.feed(b"hello wor") == "hello "
    assert assembler.feed(b"k") == "work"
    assert not assembler.stopped


def test_text_without_a_possible_stop_prefix_is_released_at_once() -> None:
    assert TextAssembler(["world"]).feed(b"hello there") == "hello there"


def test_incomplete_character_is_held_until_its_last_byte_arrives() -> None:
    assembler = TextAssembler()
    assert assembler.feed("€".encode()[:1]) == ""
    assert assembler.feed("€".encode()[1:2]) == ""
    assert assembler.feed("€".encode()[2:]) == "€"


def test_truncated_character_at_the_end_becomes_one_replacement_on_finish() -> None:
    assembler = TextAssembler()
    assert assembler.feed(b"ok\xe2\x82") == "ok"
    assert assembler.finish() == REPLACEMENT
    assert assembler.text == "ok" + REPLACEMENT


def test_held_back_stop_prefix_is_released_on_finish() -> None:
    assembler = TextAssembler(["</end>"])
    assert assembler.feed(b"done</en") == "done"
    assert assembler.finish() == "</en"
    assert assembler.text == "done</en"


def test_nothing_is_released_after_a_stop_sequence() -> None:
    assembler = TextAssembler(["."])
    assert assembler.feed(b"one. two") == "one"
    assert assembler.feed(b" three") == ""
    assert assembler.finish() == ""
    assert assembler.text == "one"


def test_earliest_of_several_stop_sequences_wins() -> None:
    _, assembler = assemble([b"x END y STOP"], stops=["STOP", "END"])
    assert assembler.text == "x "


def test_final_text_does_not_depend_on_token_boundaries_when_stops_nest() -> None:
    stops = ["abcd", "c"]
    _, whole = assemble([b"abcd"], stops)
    _, split = assemble([b"abc", b"d"], stops)
    assert whole.text == split.text
