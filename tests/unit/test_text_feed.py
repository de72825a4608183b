"""What a reader prints of a job's text (genq.producer.core: parse_entry, StreamState.shown_text,
TextFeed): entries that do not validate are refused by name, uncommitted text is held back
from a pipe, and nothing written is taken back."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from genq.common.errors import GenqError, InvalidEntry
from genq.common.frames import (
    DoneFrame,
    Frame,
    ResumeData,
    ResumeFrame,
    TokenData,
    TokenFrame,
    WindowData,
    WindowFrame,
)
from genq.common.schemas import JobResult
from genq.producer.core import StreamState, TextFeed, parse_entry, parse_record

from .test_gateway_chunks import done

JOB = "ab" * 16
MakeResult = Callable[..., JobResult]


def token(epoch: int, seq: int, text: str) -> TokenFrame:
    return TokenFrame(job_id=JOB, epoch=epoch, seq=seq, data=TokenData(text=text, token_ids=[1]))


def window(epoch: int, seq: int, number: int, text: str) -> WindowFrame:
    data = WindowData(window=number, token_ids=[1], text=text, tokens_total=1)
    return WindowFrame(job_id=JOB, epoch=epoch, seq=seq, data=data)


def resume(seq: int, committed_chars: int) -> ResumeFrame:
    data = ResumeData(from_window=1, committed_tokens=1, committed_chars=committed_chars)
    return ResumeFrame(job_id=JOB, epoch=1, seq=seq, data=data)


def test_parse_entry_gives_the_frame_the_relay_wrote() -> None:
    frame = token(0, 3, "abc")
    assert parse_entry(JOB, "0-3", {"f": frame.model_dump_json()}) == frame


@pytest.mark.parametrize(
    ("fields", "entry_id", "reason"),
    [
        ({"f": token(0, 3, "a").model_dump_json().replace('"a"', "7")}, "0-3", "data.text"),
        ({"f": "{not json"}, "0-3", "Invalid JSON"),
        ({"f": "[1, 2]"}, "0-3", "stream entry 0-3"),
        ({"x": token(0, 3, "a").model_dump_json()}, "0-3", "has no frame"),
        ({"f": token(0, 3, "a").model_dump_json()}, "0-4", "holds the frame of job"),
        ({"f": token(0, 3, "a").model_dump_json().replace(JOB, "cd" * 16)}, "0-3", "cdcd"),
    ],
)
def test_parse_entry_refuses_what_the_relay_would_not_write(
    fields: dict[str, str], entry_id: str, reason: str
) -> None:
    with pytest.raises(InvalidEntry, match=reason) as caught:
        parse_entry(JOB, entry_id, fields)
    assert isinstance(caught.value, GenqError) and JOB in str(caught.value)


def test_parse_entry_never_shows_the_entry_content() -> None:
    secret = json.loads(token(0, 3, "a").model_dump_json())
    secret["data"]["text"] = {"prompt": "my secret prompt"}
    with pytest.raises(InvalidEntry) as caught:
        parse_entry(JOB, "0-3", {"f": json.dumps(secret)})
    assert "secret" not in str(caught.value)


def test_piped_text_is_only_what_a_window_committed() -> None:
    state = StreamState(JOB)
    state.apply(token(0, 1, "Once "))
    assert (state.shown_text(eager=True), state.shown_text(eager=False)) == ("Once ", "")
    state.apply(window(0, 2, 0, "Once "))
    state.apply(token(0, 3, "upon"))
    assert (state.shown_text(eager=True), state.shown_text(eager=False)) == ("Once upon", "Once ")


def test_text_after_a_hole_is_held_back_until_mended(make_result: MakeResult) -> None:
    state = StreamState(JOB)
    state.apply(token(0, 1, "Once "))
    state.apply(window(0, 2, 0, "Once "))
    state.apply(token(0, 4, "time"))  # seq 3 (" upon a ") was lost
    assert state.shown_text(eager=True) == "Once "
    state.apply(DoneFrame(job_id=JOB, epoch=0, seq=5, data=make_result(text="Once upon a time")))
    assert state.shown_text(eager=False) == "Once upon a time"


def test_feed_writes_only_what_is_new() -> None:
    feed = TextFeed()
    assert [feed.advance(t) for t in ("", "Once", "Once up", "Once up")] == ["", "Once", " up", ""]
    assert feed.diverged_at is None


def test_feed_waits_while_a_resumed_attempt_regenerates_what_was_written() -> None:
    feed = TextFeed()
    feed.advance("Once upon a")
    assert [feed.advance(t) for t in ("Once ", "Once upon", "Once upon a time")] == [
        "",
        "",
        " time",
    ]
    assert feed.diverged_at is None


def test_feed_says_where_a_regeneration_differs_from_what_was_written() -> None:
    feed = TextFeed()
    feed.advance("Once upon a")
    feed.advance("Once ")
    assert feed.advance("Once there was") == "there was"
    assert (feed.diverged_at, feed.stale) == (5, 6)
    assert feed.advance("Once there was a") == " a" and feed.diverged_at is None


def test_feed_says_so_when_the_final_text_is_shorter_than_what_was_written() -> None:
    feed = TextFeed()
    feed.advance("Once upon a")
    assert feed.advance("Once", final=True) == ""
    assert (feed.diverged_at, feed.stale) == (4, 7)


def test_resumed_stream_shows_the_committed_text_then_the_regeneration() -> None:
    state, feed, out = StreamState(JOB), TextFeed(), []
    for frame in (
        token(0, 1, "Once "),
        window(0, 2, 0, "Once "),
        token(0, 3, "upon"),  # the dead attempt's uncommitted tail
        resume(1, 5),
        token(1, 2, "upon a time"),
        window(1, 3, 1, "upon a time"),
    ):
        state.apply(frame)
        out.append(feed.advance(state.shown_text(eager=False)))
    assert "".join(out) == "Once upon a time" == state.text


class CountingState(StreamState):
    """A StreamState that counts the characters of its text it hands out, whole or in part."""

    touched = 0

    @property
    def text(self) -> str:
        text = super().text
        self.touched += len(text)
        return text

    def text_between(self, start: int, end: int) -> str:
        text = super().text_between(start, end)
        self.touched += len(text)
        return text

    def tail_from(self, start: int) -> str | None:
        text = super().tail_from(start)
        self.touched += len(text or "")
        return text


@pytest.mark.parametrize("eager", [True, False], ids=["terminal", "pipe"])
def test_following_a_stream_reads_each_character_of_its_text_once(eager: bool) -> None:
    """A frame costs the printer its new text, not the whole text so far (which grows with
    the job: reading it at each frame made a long job's printing quadratic)."""
    state, feed, out = CountingState(JOB), TextFeed(), []
    seq = 0
    for window_number in range(40):
        for _ in range(10):
            seq += 1
            state.apply(token(0, seq, "word "))
            out.append(feed.follow(state, eager))
        seq += 1
        state.apply(window(0, seq, window_number, "word " * 10))
        out.append(feed.follow(state, eager))
    assert "".join(out) == "word " * 400
    assert state.touched == len("word " * 400)


def test_following_a_resumed_stream_shows_the_committed_text_then_the_regeneration() -> None:
    state, feed, out = CountingState(JOB), TextFeed(), []
    for frame in (
        token(0, 1, "Once "),
        window(0, 2, 0, "Once "),
        token(0, 3, "upon a"),  # the dead attempt's tail, written on a terminal
        resume(1, 5),
        token(1, 2, "upon"),  # regenerated as written: nothing new yet
        token(1, 3, " a time"),
    ):
        state.apply(frame)
        out.append(feed.follow(state, eager=True))
    assert out == ["Once ", "", "upon a", "", "", " time"]
    assert feed.diverged_at is None and feed.written == "Once upon a time" == state.text


def test_following_a_regeneration_that_differs_says_where() -> None:
    state, feed = StreamState(JOB), TextFeed()
    for frame in (token(0, 1, "Once "), window(0, 2, 0, "Once "), token(0, 3, "upon a")):
        state.apply(frame)
        feed.follow(state, eager=True)
    state.apply(resume(1, 5))
    assert feed.follow(state, eager=True) == ""
    state.apply(token(1, 2, "there"))
    assert feed.follow(state, eager=True) == "there"
    assert (feed.diverged_at, feed.stale) == (5, 6)
    state.apply(token(1, 3, " was"))
    assert feed.follow(state, eager=True) == " was" and feed.diverged_at is None


def winding(regenerated: str) -> list[Frame]:
    """A stream whose text changes every way it can: added in order, cut back by a resume
    and `regenerated` ("upon": alike; else differently, "upXn a" to where the text cut back
    ended), an empty chunk, held back after a hole and mended by the done frame."""
    return [
        token(0, 1, "Once "),
        window(0, 2, 0, "Once "),
        token(0, 3, "upon a"),
        resume(1, 5),
        token(1, 2, regenerated),
        token(1, 3, ""),
        token(1, 4, " a time"),
        token(1, 6, " there"),  # after a hole (seq 5): held back until mended
        token(1, 7, " was"),
        done(1, 8, f"Once {regenerated} a time, there was"),
    ]


@pytest.mark.parametrize("eager", [True, False], ids=["terminal", "pipe"])
@pytest.mark.parametrize(
    "regenerated", ["upon", "once", "upXn a"], ids=["alike", "differently", "as-long"]
)
def test_following_writes_what_comparing_whole_texts_writes(eager: bool, regenerated: str) -> None:
    """`follow` reads only what a token frame added where it can: it writes exactly what
    `advance` writes comparing whole texts, whichever frames it is called after."""
    frames = winding(regenerated)
    for calls in range(2 ** (len(frames) - 1)):  # after the last frame, and any others
        state, fast, whole = StreamState(JOB), TextFeed(), TextFeed()
        for at, frame in enumerate(frames):
            state.apply(frame)
            if at < len(frames) - 1 and not calls >> at & 1:
                continue
            written = fast.follow(state, eager)
            assert written == whole.advance(state.shown_text(eager), state.done), (calls, at)
            assert (fast.diverged_at, fast.stale) == (whole.diverged_at, whole.stale)
        assert fast.written == whole.written


def test_text_between_reads_across_parts() -> None:
    state = StreamState(JOB)
    for seq, part in enumerate(["Once ", "", "upon", " a time"], start=1):
        state.apply(token(0, seq, part))
    text = "Once upon a time"
    assert state.length == len(text)
    for start in range(len(text) + 1):
        for end in range(start, len(text) + 2):
            assert state.text_between(start, end) == text[start:end], (start, end)


def test_a_resume_that_cuts_text_back_counts_as_a_rewrite() -> None:
    state = StreamState(JOB)
    state.apply(token(0, 1, "Once upon"))
    state.apply(resume(1, 9))  # cuts nothing
    assert (state.rewrites, state.text) == (0, "Once upon")
    state.apply(resume(2, 5))
    assert (state.rewrites, state.text, state.length) == (1, "Once ", 5)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [({"state": "succeeded"}, "no field 'spec'"), ({"spec": "{}"}, "exactly one of")],
)
def test_a_record_genq_did_not_write_is_an_invalid_entry(raw: dict[str, str], reason: str) -> None:
    with pytest.raises(InvalidEntry, match=reason):
        parse_record(JOB, raw)
