"""genq.common.store.stream_writes: the commands a batch of the relay's frames becomes. Each
names one job's keys (one hash slot: Redis Cluster takes it), and they run in the order the
guarantees need."""

from __future__ import annotations

import hiredis
from redis.crc import key_slot

from genq.common.frames import (
    ErrorData,
    ErrorFrame,
    TokenData,
    TokenFrame,
    WindowData,
    WindowFrame,
    _Frame,
)
from genq.common.store import streams
from genq.common.store.keys import Keys
from genq.common.store.stream_writes import FrameCommands, FrameWrite
from genq.workers.relay.admission import Admission
from genq.workers.relay.metrics import RelayStats

A, B = "aa" * 16, "bb" * 16
TTL_S = 3600


def admitted(*frames: _Frame) -> list[FrameWrite]:
    """The frames as admission passes them on (every job exists: none is looked up)."""
    admission = Admission(None, Keys(), RelayStats())  # type: ignore[arg-type]
    raws = [frame.model_dump_json().encode() for frame in frames]
    return [frame for raw in raws if (frame := admission._validate(raw)) is not None]


def token(job: str, seq: int) -> TokenFrame:
    return TokenFrame(job_id=job, epoch=1, seq=seq, data=TokenData(text="é", token_ids=[5]))


def window(job: str, seq: int, k: int) -> WindowFrame:
    data = WindowData(window=k, token_ids=[5], text="é", tokens_total=k + 1)
    return WindowFrame(job_id=job, epoch=1, seq=seq, data=data)


def done(job: str, seq: int) -> ErrorFrame:
    """A terminal frame."""
    data = ErrorData(code="internal", message="gone", retryable=False)
    return ErrorFrame(job_id=job, epoch=1, seq=seq, data=data)


def decoded(parts: list[bytes]) -> list[list[bytes]]:
    reader = hiredis.Reader()
    reader.feed(b"".join(parts))
    commands = []
    while (command := reader.gets()) is not False:
        commands.append(command)
    assert len(commands) == len(parts)
    return commands


def keys_of(command: list[bytes]) -> list[bytes]:
    name = command[0]
    if name == b"EVAL":
        return command[3 : 3 + int(command[2])]
    assert name in (b"XADD", b"EXPIRE")
    return [command[1]]


def test_a_batch_becomes_per_job_commands_in_the_order_its_guarantees_need() -> None:
    frames = [token(A, 1), token(B, 1), window(A, 2, 0), window(B, 0, 3), done(A, 3)]
    commands = decoded(FrameCommands(Keys(), TTL_S).encode(admitted(*frames)))
    keys = Keys()
    assert [(c[0], c[1] if c[0] != b"EVAL" else c[3]) for c in commands] == [
        (b"XADD", streams.stream_key(keys, A).encode()),
        (b"XADD", streams.stream_key(keys, B).encode()),
        (b"EVAL", streams.checkpoint_key(keys, A).encode()),  # window 0 checkpointed first ...
        (b"XADD", streams.stream_key(keys, A).encode()),  # ... then readable
        (b"EVAL", streams.checkpoint_key(keys, B).encode()),  # seq 0: for the checkpoint only
        (b"XADD", streams.stream_key(keys, A).encode()),
        (b"EXPIRE", streams.stream_key(keys, A).encode()),  # after the terminal frame
        (b"EXPIRE", streams.checkpoint_key(keys, A).encode()),
    ]
    assert [c[2] for c in commands if c[0] == b"XADD"] == [b"1-1", b"1-1", b"1-2", b"1-3"]
    assert commands[2][5:7] == [b"1", b"0"]  # epoch, window: the script fences and orders


def test_no_command_names_keys_of_two_hash_slots() -> None:
    frames = [token(A, 1), window(A, 2, 0), done(A, 3), token(B, 1), window(B, 0, 1)]
    for command in decoded(FrameCommands(Keys("tenant"), TTL_S).encode(admitted(*frames))):
        assert len({key_slot(key) for key in keys_of(command)}) == 1, command


def test_with_a_replica_wait_a_batch_checkpoints_waits_then_streams() -> None:
    frames = [token(A, 1), window(A, 2, 0), token(B, 1), done(A, 3)]
    commands = decoded(FrameCommands(Keys(), TTL_S, wait=(1, 250)).encode(admitted(*frames)))
    names = [c[0] for c in commands]
    assert names == [b"EVAL", b"WAIT", b"XADD", b"XADD", b"XADD", b"XADD", b"EXPIRE", b"EXPIRE"]
    assert commands[1] == [b"WAIT", b"1", b"250"]
    assert [c[2] for c in commands if c[0] == b"XADD"] == [b"1-1", b"1-2", b"1-1", b"1-3"]


def test_a_batch_of_tokens_only_does_not_wait() -> None:
    frames = [token(A, 1), token(B, 1)]
    commands = decoded(FrameCommands(Keys(), TTL_S, wait=(1, 250)).encode(admitted(*frames)))
    assert [c[0] for c in commands] == [b"XADD", b"XADD"]
