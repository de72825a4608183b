"""genq.workers.generation.chunks.Chunker: when a chunk of tokens is due, and what it carries."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from genq.workers.generation.chunks import Chunker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeChunker = Callable[..., Chunker]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_chunker(clock: FakeClock) -> MakeChunker:
    def make(max_tokens: int = 4, interval_s: float = 0.5) -> Chunker:
        return Chunker(max_tokens=max_tokens, interval_s=interval_s, clock=clock)

    return make


def test_nothing_is_due_or_pending_before_any_token(make_chunker: MakeChunker) -> None:
    chunker = make_chunker()
    assert not chunker.due()
    assert not chunker.pending()


def test_first_token_is_due_at_once(make_chunker: MakeChunker) -> None:
    chunker = make_chunker(max_tokens=100, interval_s=60.0)
    chunker.add(7, "a")
    assert chunker.due()


def test_take_returns_the_tokens_and_text_and_resets(make_chunker: MakeChunker) -> None:
    chunker = make_chunker()
    chunker.add(7, "a")
    chunker.add(8, "")
    chunker.add(9, "bc")
    data = chunker.take()
    assert data.token_ids == [7, 8, 9]
    assert data.text == "abc"
    assert not chunker.pending()
    assert not chunker.due()


def test_after_the_first_flush_a_chunk_is_due_at_max_tokens(make_chunker: MakeChunker) -> None:
    chunker = make_chunker(max_tokens=3, interval_s=60.0)
    chunker.add(1, "a")
    chunker.take()
    chunker.add(2, "b")
    chunker.add(3, "c")
    assert not chunker.due()
    chunker.add(4, "d")
    assert chunker.due()
    assert chunker.take().token_ids == [2, 3, 4]


def test_after_the_first_flush_a_chunk_is_due_when_the_interval_passes(
    make_chunker: MakeChunker, clock: FakeClock
) -> None:
    chunker = make_chunker(max_tokens=100, interval_s=0.5)
    chunker.add(1, "a")
    chunker.take()
    chunker.add(2, "b")
    clock.advance(0.499)
    assert not chunker.due()
    clock.advance(0.001)
    assert chunker.due()


def test_interval_counts_from_the_last_flush(make_chunker: MakeChunker, clock: FakeClock) -> None:
    chunker = make_chunker(max_tokens=100, interval_s=0.5)
    chunker.add(1, "a")
    clock.advance(10.0)
    chunker.take()
    chunker.add(2, "b")
    clock.advance(0.4)
    assert not chunker.due()


def test_interval_counts_from_when_the_chunk_was_sent(
    make_chunker: MakeChunker, clock: FakeClock
) -> None:
    """A publish slower than the interval does not make the next token due at once."""
    chunker = make_chunker(max_tokens=100, interval_s=0.02)
    chunker.add(1, "a")
    chunker.take()
    clock.advance(0.12)  # the publish's round trip
    chunker.sent()
    chunker.add(2, "b")
    clock.advance(0.019)
    assert not chunker.due()
    clock.advance(0.002)
    assert chunker.due()


def test_elapsed_interval_without_tokens_is_not_due(
    make_chunker: MakeChunker, clock: FakeClock
) -> None:
    chunker = make_chunker(interval_s=0.5)
    chunker.add(1, "a")
    chunker.take()
    clock.advance(5.0)
    assert not chunker.due()


def test_text_without_tokens_is_pending_but_never_due(make_chunker: MakeChunker) -> None:
    chunker = make_chunker()
    chunker.add_text("tail")
    assert chunker.pending()
    assert not chunker.due()
    data = chunker.take()
    assert (data.text, data.token_ids) == ("tail", [])


def test_empty_text_is_not_pending(make_chunker: MakeChunker) -> None:
    chunker = make_chunker()
    chunker.add_text("")
    assert not chunker.pending()


def test_taken_chunk_is_not_changed_by_later_tokens(make_chunker: MakeChunker) -> None:
    chunker = make_chunker()
    chunker.add(1, "a")
    data = chunker.take()
    chunker.add(2, "b")
    assert data.token_ids == [1]
    assert data.text == "a"


def test_a_lazy_chunker_holds_the_first_token_until_the_interval_passes(
    clock: FakeClock,
) -> None:
    chunker = Chunker(max_tokens=100, interval_s=0.5, clock=clock, eager=False)
    chunker.add(7, "a")
    assert not chunker.due()
    clock.advance(0.49)
    chunker.add(8, "b")
    assert not chunker.due()
    clock.advance(0.02)
    assert chunker.due()
    assert chunker.take().token_ids == [7, 8]


def test_a_lazy_chunker_still_flushes_a_full_chunk(clock: FakeClock) -> None:
    chunker = Chunker(max_tokens=3, interval_s=60.0, clock=clock, eager=False)
    for token in (1, 2):
        chunker.add(token, "x")
        assert not chunker.due()
    chunker.add(3, "x")
    assert chunker.due()
