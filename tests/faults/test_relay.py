"""The relay against hostile messages and outages: nothing published stops it or reaches a
stream, a relay that dies is started again, and checkpoints catch up after it was down."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genq import Client
from genq.common.frames import (
    ContinuationFrame,
    DoneFrame,
    ErrorData,
    ErrorFrame,
    Frame,
    ResumeFrame,
    TokenData,
    TokenFrame,
    WindowData,
    WindowFrame,
    parse_frame,
)
from genq.common.store import channels, jobs, run, run_all, streams
from genq.common.store.keys import Keys
from genq.workers.relay.service import Relay
from ops.localstack import RedisServer, free_port, settings_for, wait_for
from tests.integration.conftest import Stack
from tests.integration.test_metrics import scrape, total
from tests.integration.test_stack import StackDir, assert_all_gone, ok, running
from tests.state import stream_frames, stream_length

# The job id of the PUBLISH: no job has it.
GHOST = "0123456789abcdef0123456789abcdef"
WAIT_S = 15.0  # what the relay needs to move a frame, many times over
HIGH = 10**12  # a seq far ahead of any the tests reach
SMALL: dict[str, Any] = {"max_tokens": 8, "seed": 3, "ignore_eos": True}


def frames_of(client: Client, job_id: str) -> list[Frame]:
    """Every entry of the job's stream, validated as any reader validates it."""
    return stream_frames(client.redis, client.keys, job_id)


def publish_then_sync(client: Client, messages: list[tuple[str, bytes]], marker: str) -> None:
    """Publish `messages` (channel, payload), then a valid token frame of job `marker`, and
    wait until the relay has moved that one: it read everything published before it."""
    run_all(client.redis, [channels.publish(channel, payload) for channel, payload in messages])
    seq = max(f.seq for f in frames_of(client, marker)) + 1
    frame = TokenFrame(job_id=marker, epoch=0, seq=seq, data=TokenData(text="", token_ids=[]))
    run(
        client.redis,
        channels.publish(streams.channel(client.keys, marker), frame.model_dump_json()),
    )
    moved = lambda: frames_of(client, marker)[-1].seq == seq  # noqa: E731
    wait_for(moved, WAIT_S, "the relay to move a frame published after the hostile ones")


def header(job_id: str, seq: str, kind: str) -> str:
    return f'{{"v":1,"job_id":"{job_id}","epoch":0,"seq":{seq},"ts_ms":1,"type":"{kind}"'


# A message each, as a client with publish rights could send it; each stopped or poisoned
# the relay before it validated frames. `{job}` is a job that exists, `{seq}` a fresh seq.
HOSTILE = {
    # The PUBLISH, byte for byte: a window frame without data (KeyError: 'data').
    "window_frame_without_data": (
        GHOST,
        '{"v":1,"job_id":"0123456789abcdef0123456789abcdef","epoch":0,"seq":5,"ts_ms":1,'
        '"type":"window"}',
    ),
    # A header that parses, then JSON that does not (json.loads raised in the relay).
    "window_frame_cut_short": (None, header("{job}", "{seq}", "window") + ',"data":{"window":0,'),
    # A valid header and JSON, and a body of the wrong types: copied into the stream, it then
    # broke every reader of the job with pydantic's ValidationError.
    "token_frame_with_a_bad_body": (
        None,
        header("{job}", "{seq}", "token") + ',"data":{"text":5,"token_ids":"x"}}',
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_relay_survives_a_hostile_frame_and_moves_nothing_of_it(
    make_stack: Callable[[], Stack], case: str
) -> None:
    stack = make_stack()
    port = free_port()
    relay = stack.relay(GENQ_RELAY_METRICS_PORT=str(port))
    stack.worker("a")
    job_id, template = HOSTILE[case]
    with Client(stack.settings) as client:
        victim = client.submit("victim", **SMALL)
        text = victim.result(timeout=60).text
        before = frames_of(client, victim.job_id)
        target = job_id or victim.job_id
        seq = str(before[-1].seq + 1)
        message = template.replace("{job}", target).replace('"{seq}"', seq).replace("{seq}", seq)
        channel = streams.channel(client.keys, target)
        # Twice: counted twice, logged once.
        publish_then_sync(client, [(channel, message.encode())] * 2, marker=victim.job_id)

        assert relay.proc is not None and relay.proc.poll() is None, "the relay exited"
        after = frames_of(client, victim.job_id)  # every entry still validates
        assert [f.seq for f in after] == [f.seq for f in before] + [before[-1].seq + 1]
        assert not client.redis.exists(
            streams.stream_key(client.keys, GHOST), streams.checkpoint_key(client.keys, GHOST)
        )
        samples = scrape(port)
        reason = "json" if case == "window_frame_cut_short" else "schema"
        assert total(samples, "genq_relay_dropped_frames_total", reason=reason) == 2
        assert relay.log.read_text().count(f"dropped a message for job {target}") == 1
        assert message not in relay.log.read_text()  # never the frame's text

        later = client.submit("after the hostile frame", **SMALL)
        with later.stream(timeout=60) as stream:
            frames = list(stream)
        assert isinstance(frames[-1], DoneFrame)
        assert stream.text == later.result().text
        assert client.job(victim.job_id).result().text == text


def test_a_frame_for_a_job_that_does_not_exist_creates_nothing(client: Client) -> None:
    marker = client.submit("marker", **SMALL)
    marker.result(timeout=60)
    data = WindowData(window=0, token_ids=[1, 2], text="ab", tokens_total=2)
    ghost = [
        TokenFrame(job_id=GHOST, epoch=0, seq=1, data=TokenData(text="ab", token_ids=[1, 2])),
        WindowFrame(job_id=GHOST, epoch=0, seq=2, data=data),
        ErrorFrame(
            job_id=GHOST, epoch=0, seq=3, data=ErrorData(code="x", message="y", retryable=False)
        ),
    ]
    channel = streams.channel(client.keys, GHOST)
    messages = [(channel, frame.model_dump_json().encode()) for frame in ghost]
    publish_then_sync(client, messages, marker=marker.job_id)
    keys = client.keys
    assert (
        client.redis.exists(
            streams.stream_key(keys, GHOST),
            streams.checkpoint_key(keys, GHOST),
            jobs.record_key(keys, GHOST),
        )
        == 0
    )


# --- the relay's frame handling, driven with generated junk -------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
# A value of a type no field of its kind accepts (pydantic's lax mode takes "5" for 5).
WRONG_FOR = {
    "v": st.sampled_from([0, 2, "one", None, [1]]),
    "job_id": st.sampled_from([5, None, ["x"], {"a": 1}]),
    "epoch": st.sampled_from([-1, 1.5, "x", None, [], {}]),
    "seq": st.sampled_from([-1, 2.5, "seq", None, [1]]),
    "ts_ms": st.sampled_from([-5, "now", None, {}]),
    "type": st.sampled_from(["windows", "", 7, None, "TOKEN"]),
    "data": st.sampled_from([None, 5, "data", [], {"unknown": 1}]),
}


def mutated(frame: dict[str, Any], field: str, value: Any) -> bytes:
    return json.dumps({**frame, field: value}).encode()


@st.composite
def junk(draw: st.DrawFn, valid: bytes) -> bytes:
    """Anything but a valid frame of the job: bytes, JSON of any shape, a valid frame cut
    short, or one with a field of the wrong type."""
    kind = draw(st.sampled_from(["bytes", "json", "truncated", "wrong_type", "deep"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "deep":
        depth = draw(st.integers(100, 100_000))
        return b'{"v":1,"data":' + b"[" * depth + b"]" * depth + b"}"
    field = draw(st.sampled_from(sorted(WRONG_FOR)))
    return mutated(json.loads(valid), field, draw(WRONG_FOR[field]))


@pytest.fixture
def lone_relay(
    redis_server: RedisServer, genq_env: dict[str, str], databases: Iterator[int]
) -> Iterator[tuple[Relay, Client]]:
    """A relay driven in this process (its `write`, as its loop calls it) and a client, on a
    Redis database of their own."""
    url = redis_server.url.rsplit("/", 1)[0] + f"/{next(databases)}"
    env = {**genq_env, "GENQ_REDIS_URL": url}
    relay = Relay(settings_for(env))
    with Client(settings_for(env)) as client:
        yield relay, client


def test_relay_moves_the_valid_frames_whatever_junk_comes_before_them(
    lone_relay: tuple[Relay, Client],
) -> None:
    relay, client = lone_relay
    job_id = client.submit("junk", max_tokens=4).job_id  # a record; no worker runs it
    keys: Keys = client.keys
    # What the junk is made from: fixed, so that hypothesis sees the same strategy each time,
    # and ahead of every seq the test uses: junk that got through would block what follows.
    one = WindowData(window=0, token_ids=[7], text="é", tokens_total=1)
    models = [
        TokenFrame(
            job_id=job_id, epoch=0, seq=HIGH, ts_ms=1, data=TokenData(text="é", token_ids=[7])
        ),
        WindowFrame(job_id=job_id, epoch=0, seq=HIGH + 1, ts_ms=1, data=one),
    ]
    templates = [model.model_dump_json().encode() for model in models]

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data: st.DataObject) -> None:
        before = frames_of(client, job_id)
        seq = before[-1].seq + 1 if before else 1
        window = run(client.redis, streams.checkpointed(keys, job_id))
        token = TokenFrame(job_id=job_id, epoch=0, seq=seq, data=TokenData(text="é", token_ids=[7]))
        done = WindowData(window=window, token_ids=[7], text="é", tokens_total=window + 1)
        closing = WindowFrame(job_id=job_id, epoch=0, seq=seq + 1, data=done)
        valid = [token.model_dump_json().encode(), closing.model_dump_json().encode()]
        bad = data.draw(st.lists(st.sampled_from(templates).flatmap(junk), min_size=1, max_size=6))
        ghost = TokenFrame(job_id=GHOST, epoch=0, seq=seq, data=TokenData(text="", token_ids=[]))
        relay.write([*bad, ghost.model_dump_json().encode(), *valid])  # never raises

        entries = frames_of(client, job_id)  # each one validates, as a reader needs
        assert entries == [*before, token, closing]
        checkpoint = run(client.redis, streams.entries(keys, job_id))
        assert len(checkpoint) == window + 1
        assert checkpoint[-1].text == "é"
        assert stream_length(client.redis, keys, GHOST) == 0

    check()
    assert relay.stats.dropped  # the junk was counted


# --- a relay that exits is started again ---------------------------------------------------


@pytest.fixture
def stack_dir(tmp_path: Path) -> Iterator[StackDir]:
    stack = StackDir(tmp_path / "stack")
    yield stack
    if (stack.path / "state.json").exists():
        stack.run("down")


def relay_status(stack: StackDir) -> dict[str, Any]:
    report = json.loads(ok(stack.run("status", "--json")).stdout)
    found: dict[str, Any] = next(p for p in report["processes"] if p["name"] == "relay")
    return found


def test_a_killed_relay_is_started_again_and_status_counts_the_restart(
    stack_dir: StackDir,
) -> None:
    ok(stack_dir.run("up"))
    state = stack_dir.state()
    first = relay_status(stack_dir)
    assert first["restarts"] == 0 and running(first["supervised_pid"])

    os.kill(first["supervised_pid"], signal.SIGKILL)
    seen: list[dict[str, Any]] = []

    def restarted() -> bool:
        seen.append(relay_status(stack_dir))
        return seen[-1]["supervised_pid"] not in (None, first["supervised_pid"])

    wait_for(restarted, WAIT_S, "the relay to be started again")
    again = seen[-1]
    assert again["restarts"] == 1 and again["alive"] and running(again["supervised_pid"])
    shown = ok(stack_dir.run("status")).stdout
    assert "restarts: 1" in shown

    with stack_dir.client() as client:  # the new relay moves frames
        job = client.submit("after the restart", **SMALL)
        with job.stream(timeout=60) as stream:
            assert isinstance(list(stream)[-1], DoneFrame)
        assert stream.text == job.result().text

    ok(stack_dir.run("down"))
    assert_all_gone(stack_dir, state)
    assert not running(again["supervised_pid"])


# --- checkpoints catch up after a relay outage ----------------------------------------------

OUTAGE_WINDOW = 50
LONG: dict[str, Any] = {
    "prompt": "outage",
    # 720 windows, about half a minute here: the job must outlast the outage, a relay's
    # start on a loaded machine (seconds; once the job had reached window 170 of 240 by
    # then) and the catch-up after it, and still be running for the kill.
    "max_tokens": 36_000,
    "window_tokens": OUTAGE_WINDOW,
    "seed": 41,
    "ignore_eos": True,
}


class Live:
    """The job's frames as published, whether or not a relay runs (a SUBSCRIBE of its own)."""

    def __init__(self, client: Client, job_id: str) -> None:
        self._live = channels.subscribe(client.redis, streams.channel(client.keys, job_id))
        self.window = -1  # the last window its worker started

    def until_window(self, window: int) -> None:
        """Read live frames until the worker starts `window` (or a later one)."""
        while self.window < window:
            message = self._live.message(WAIT_S)
            assert message is not None, f"no live frame for {WAIT_S}s"
            self._see(message)

    def now(self) -> int:
        """The window the worker is in now: every frame published so far read."""
        while (message := self._live.message(0)) is not None:
            self._see(message)
        return self.window

    def _see(self, message: str) -> None:
        frame = parse_frame(message)
        if isinstance(frame, ContinuationFrame):
            self.window = frame.data.window

    def close(self) -> None:
        self._live.close()


def test_checkpoint_catches_up_after_a_relay_outage_so_a_kill_recomputes_one_window(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    relay = stack.relay()
    stack.worker("a"), stack.worker("b")
    with Client(stack.settings) as client:
        expected = client.submit(**LONG).result(timeout=120).text
        job = client.submit(**LONG)
        checkpointed = streams.checkpointed(client.keys, job.job_id)
        live = Live(client, job.job_id)
        live.until_window(3)
        relay.signal(signal.SIGKILL)  # its window frames are lost from here on
        live.until_window(20)
        stack.relay("relay-again")
        lost = live.now()  # windows up to here (most since 3) were published while none ran
        wait_for(
            lambda: run(client.redis, checkpointed) > lost,
            WAIT_S,
            f"the checkpoint to catch up past window {lost}",
        )
        live.until_window(live.now() + 2)
        stack.holder(client, job.job_id).signal(signal.SIGKILL)
        live.close()
        with job.stream(timeout=120) as stream:
            frames = list(stream)
        assert job.result().text == stream.text == expected

    done = max(f.data.window for f in frames if isinstance(f, WindowFrame) and f.epoch == 0)
    (resume,) = [f for f in frames if isinstance(f, ResumeFrame)]
    # Every window the dead attempt finished was checkpointed: only the one it was in is
    # computed again.
    assert resume.data.from_window == done + 1
    assert all(f.seq > 0 for f in frames)  # windows sent again went to the checkpoint only
