"""genq.common.store.streams without Redis: the calls its commands make, how they decode replies,
and the versioned checkpoint entry."""

from __future__ import annotations

import json

import pytest

from genq.common.errors import InvalidEntry
from genq.common.frames import WindowData
from genq.common.ids import JOB_ID_ALPHABET
from genq.common.schemas import FinishReason, TokenLogprob
from genq.common.store import channels, streams
from genq.common.store.keys import Keys
from genq.common.store.streams import CheckpointEntry

KEYS = Keys()
JOB = "ab" * 16
OTHER = "cd" * 16


def test_a_checkpoint_entry_is_written_with_its_version() -> None:
    entry = CheckpointEntry(token_ids=[1, 2], text="ab")
    assert json.loads(streams.encode_entry(entry)) == {"v": 1, "token_ids": [1, 2], "text": "ab"}


def test_an_entry_written_before_the_version_field_reads_as_version_one() -> None:
    old = json.dumps({"token_ids": [3], "text": "c", "finish_reason": None, "tokens": 1})
    entry = streams.parse_entry(JOB, old)
    assert (entry.v, entry.token_ids, entry.text, entry.count) == (1, [3], "c", 1)


def test_an_entry_of_an_unknown_version_is_refused() -> None:
    with pytest.raises(InvalidEntry, match=JOB):
        streams.parse_entry(JOB, json.dumps({"v": 2, "token_ids": [], "text": ""}))


@pytest.mark.parametrize("raw", ["junk", "{}", '{"token_ids": [1]}', '{"text": 3}'])
def test_an_entry_genq_did_not_write_is_an_invalid_entry(raw: str) -> None:
    with pytest.raises(InvalidEntry, match="checkpoint entry"):
        streams.parse_entry(JOB, raw)


def test_a_window_round_trips_through_its_checkpoint_entry() -> None:
    logprob = TokenLogprob(token="a", logprob=-0.5)
    data = WindowData(
        window=0,
        token_ids=[],
        tokens=4,
        text="abcd",
        tokens_total=4,
        logprobs=[logprob],
        finish_reason=FinishReason.LENGTH,
    )
    entry = streams.parse_entry(JOB, streams.encode_entry(streams.entry_of(data)))
    assert entry.count == 4
    assert (entry.text, entry.logprobs, entry.finish_reason) == ("abcd", [logprob], "length")


def test_a_window_counts_its_token_ids_when_it_has_no_token_count() -> None:
    assert CheckpointEntry(token_ids=[1, 2, 3], text="x").count == 3


def test_checkpoint_runs_the_script_on_the_jobs_list_and_hash() -> None:
    entry = CheckpointEntry(token_ids=[1], text="a")
    command = streams.checkpoint(KEYS, JOB, epoch=2, window=5, entry=entry)
    (call,) = command.calls
    assert call[:7] == (
        "EVAL",
        streams.CHECKPOINT,
        2,
        f"genq:{{{JOB}}}:ckpt",
        f"genq:{{{JOB}}}:job",
        2,
        5,
    )
    assert streams.parse_entry(JOB, call[7]) == entry
    assert command.reply([-2]) == -2


def test_entries_decode_every_window_in_order() -> None:
    command = streams.entries(KEYS, JOB)
    assert command.calls == (("LRANGE", f"genq:{{{JOB}}}:ckpt", 0, -1),)
    raw = [streams.encode_entry(CheckpointEntry(token_ids=[i], text=str(i))) for i in range(3)]
    assert [e.text for e in command.reply([raw])] == ["0", "1", "2"]
    assert command.reply([[]]) == []


def test_entries_name_the_job_of_an_entry_that_does_not_validate() -> None:
    with pytest.raises(InvalidEntry, match=JOB):
        streams.entries(KEYS, JOB).reply([["junk"]])


def test_raw_entries_read_the_first_windows_undecoded() -> None:
    command = streams.raw_entries(KEYS, JOB, 3)
    assert command.calls == (("LRANGE", f"genq:{{{JOB}}}:ckpt", 0, 2),)
    assert command.reply([["junk", "x"]]) == ["junk", "x"]


def test_read_names_every_stream_then_every_position() -> None:
    a, b = streams.stream_key(KEYS, JOB), streams.stream_key(KEYS, OTHER)
    command = streams.read({a: "0-0", b: "1-4"}, count=10, block_ms=250)
    assert command.calls == (("XREAD", "COUNT", 10, "BLOCK", 250, "STREAMS", a, b, "0-0", "1-4"),)
    assert command.reply([None]) == []  # nothing within the block


def test_read_without_a_block_does_not_wait() -> None:
    command = streams.read({"s": "0-0"}, count=1, block_ms=None)
    assert "BLOCK" not in command.calls[0]


def test_append_and_frames_address_the_jobs_stream() -> None:
    key = f"genq:{{{JOB}}}:stream"
    assert streams.append(KEYS, JOB, "1-3", "{}").calls == (("XADD", key, "1-3", "f", "{}"),)
    assert streams.frames(KEYS, JOB).calls == (("XRANGE", key, "-", "+"),)


def test_retain_expires_the_stream_and_the_checkpoint() -> None:
    command = streams.retain(KEYS, JOB, 60)
    assert command.calls == (
        ("EXPIRE", f"genq:{{{JOB}}}:stream", 60),
        ("EXPIRE", f"genq:{{{JOB}}}:ckpt", 60),
    )
    assert command.reply([1, 1]) is None


def test_checkpointed_counts_the_windows() -> None:
    command = streams.checkpointed(KEYS, JOB)
    assert command.calls == (("LLEN", f"genq:{{{JOB}}}:ckpt"),)
    assert command.reply([3]) == 3


def test_an_entry_keeps_its_frame_in_one_field_which_frame_of_reads() -> None:
    command = streams.append(KEYS, JOB, "1-1", "{}")
    assert command.calls[0][3] == streams.FRAME_FIELD
    assert streams.frame_of({streams.FRAME_FIELD: "{}"}) == "{}"
    assert streams.frame_of({"frame": "{}"}) is None  # not where genq writes it
    raw = streams.raw_frames(KEYS, JOB).reply([[("1-1", {"f": "{}"}), ("1-2", {})]])
    assert raw == [("1-1", "{}"), ("1-2", "")]


def test_length_counts_the_jobs_stream_and_live_frames_go_to_its_channel() -> None:
    command = streams.length(KEYS, JOB)
    assert command.calls == (("XLEN", f"genq:{{{JOB}}}:stream"),)
    assert command.reply([7]) == 7
    assert streams.channel(KEYS, JOB) == f"genq:{{{JOB}}}:tokens"
    published = channels.publish(streams.channel(KEYS, JOB), "{}")
    assert published.calls == (("PUBLISH", f"genq:{{{JOB}}}:tokens", "{}"),)
    assert published.reply([2]) == 2  # subscribers that received it


@pytest.mark.parametrize("shares", range(1, 17))
def test_relay_shares_split_the_job_id_alphabet_into_runs_each_character_once(
    shares: int,
) -> None:
    parts = [streams.share_characters(k, shares) for k in range(1, shares + 1)]
    assert "".join(parts) == JOB_ID_ALPHABET
    assert all(parts) and max(map(len, parts)) - min(map(len, parts)) <= 1


def _class_of(pattern: str) -> tuple[bool, str]:
    """A share pattern's class on the id's first character: (negated, characters)."""
    body = pattern.removeprefix(f"{KEYS.prefix}:{{[").removesuffix("]*}:tokens")
    return body.startswith("^"), body.removeprefix("^")


@pytest.mark.parametrize("shares", [2, 3, 7, 16])
def test_every_first_character_falls_in_exactly_one_relay_share(shares: int) -> None:
    classes = [_class_of(streams.channel_pattern(KEYS, k, shares)) for k in range(1, shares + 1)]
    for first in [chr(code) for code in range(256)] + ["中", "{", "}"]:
        holders = [k for k, (negated, chars) in enumerate(classes) if (first in chars) != negated]
        assert len(holders) == 1, (first, holders)


def test_one_share_is_every_channel() -> None:
    assert streams.channel_pattern(KEYS) == streams.channel_pattern(KEYS, 1, 1) == "genq:{*}:tokens"
    assert streams.channel_pattern(KEYS, 2, 2) == "genq:{[^01234567]*}:tokens"
