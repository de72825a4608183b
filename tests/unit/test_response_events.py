"""The Responses API's events (producer/gateway/response_events.py): numbered from the job's
stream alone, so that any prefix of the stream numbers its events as the whole stream does;
after a resume, the deltas joined are the final text, with no gap and no repeat."""

from __future__ import annotations

from typing import Any

import pytest

from genq.common.frames import Frame
from genq.common.store.responses import ResponseRecord
from genq.producer.core import StreamState, TextFeed
from genq.producer.gateway.chunks import DIVERGED
from genq.producer.gateway.response_events import ResponseEvents

from .test_gateway_chunks import JOB, done, resume, token
from .test_text_feed import winding

BACKGROUND = ResponseRecord(created_at=1, model="tiny", background=True)
RESUMED: list[Frame] = [
    token(0, 1, "Hello"),
    token(0, 2, " wor"),
    resume(1, 5),  # the new attempt goes on from "Hello": " wor" again, then more
    token(1, 2, " wo"),
    token(1, 3, "rld"),
    done(1, 4, "Hello world"),
]


class WholeTexts(TextFeed):
    """A feed that compares whole texts at every frame, never reading only what one added."""

    def follow(self, state: StreamState, eager: bool = False) -> str:
        return self.advance(state.shown_text(eager), state.done)


def events(
    frames: list[Frame],
    record: ResponseRecord = BACKGROUND,
    feed: TextFeed | None = None,
    unsent_through: int = -1,
) -> list[dict[str, Any]]:
    """The events of `frames` to the mapper's end, as the gateway makes them."""
    state = StreamState(JOB)
    mapper = ResponseEvents(JOB, record, feed or TextFeed(), unsent_through=unsent_through)
    out = mapper.start()
    for frame in frames:
        state.apply(frame)
        out.extend(mapper.render(frame, state))
        if mapper.ended:
            break
    return out


def deltas(out: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in out if e["type"] == "response.output_text.delta")


def test_a_resumed_jobs_deltas_join_into_its_final_text_with_contiguous_numbers() -> None:
    out = events(RESUMED)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert deltas(out) == "Hello world" == out[-1]["response"]["output"][0]["content"][0]["text"]
    kinds = [e["type"] for e in out]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert kinds[-1] == "response.incomplete"


def test_every_prefix_of_the_stream_numbers_its_events_as_the_whole_stream_does() -> None:
    whole = events(RESUMED)
    for cut in range(len(RESUMED)):
        prefix = events(RESUMED[:cut])
        assert prefix == whole[: len(prefix)]


def test_a_regeneration_that_differs_ends_with_an_error_event() -> None:
    frames: list[Frame] = [
        token(0, 1, "Hello"),
        token(0, 2, " wor"),
        resume(1, 5),
        token(1, 2, " sky"),
    ]
    out = events(frames)
    assert out[-1]["type"] == "error" and out[-1]["code"] == DIVERGED


def test_a_response_that_is_not_background_is_in_progress_at_once() -> None:
    record = BACKGROUND.model_copy(update={"background": False})
    kinds = [e["type"] for e in events([], record)]
    assert kinds == ["response.created", "response.in_progress"]


@pytest.mark.parametrize(
    "regenerated", ["upon", "once", "upXn a"], ids=["alike", "differently", "as-long"]
)
def test_a_replay_makes_the_events_of_one_that_compares_whole_texts(regenerated: str) -> None:
    """The events read only what each token frame added, and a reader resuming after event N
    is spared the making of the deltas up to N: yet it is sent, one by one, the events after N
    of a mapper that compares whole texts at every frame and makes every event."""
    frames = winding(regenerated)
    whole = events(frames, feed=WholeTexts())
    assert events(frames) == whole
    for after in range(-1, len(whole)):
        replayed = events(frames, unsent_through=after)
        assert [e for e in replayed if e["sequence_number"] > after] == whole[after + 1 :]
