"""A client host following a stream through the gateway (`genq serve` on `gw`) is cut off.
Back within the reattach grace, it reattaches with `Last-Event-ID` and receives the rest,
with no gap and no repeat; away past the grace (GENQ_REATTACH_GRACE_S), its job is
cancelled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from genq.common.schemas import JobState
from ops.localstack import Gateway, stop_process, wait_for
from tests.hosts.conftest import HostStack
from tests.integration.gateway_support import Event, position, record

KEY = "hosts-tier-key"  # the gateway needs one to listen beyond loopback
BODY: dict[str, Any] = {"model": "tiny", "prompt": "client", "seed": 5, "stream": True}
BODY |= {"max_tokens": 3000, "ignore_eos": True}


class Follower:
    """tests/hosts/follower.py on the `client` host; what it saw, from its file."""

    def __init__(
        self, stack: HostStack, gateway: Gateway, reattach_s: float, body: dict[str, Any]
    ) -> None:
        self.out = stack.logs / "follower.jsonl"
        argv = [sys.executable, "-m", "tests.hosts.follower", gateway.url, KEY, str(self.out)]
        prefix = stack.network["client"].exec_prefix()
        self.proc = subprocess.Popen(
            [*prefix, *argv, str(reattach_s)], stdin=subprocess.PIPE, env=dict(os.environ)
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(body).encode())
        self.proc.stdin.close()

    def lines(self) -> list[dict[str, Any]]:
        if self.proc.poll() not in (None, 0):
            raise AssertionError(f"the follower exited with {self.proc.returncode}")
        text = self.out.read_text() if self.out.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def events(self) -> list[Event]:
        return [Event(line["id"], line["data"]) for line in self.lines() if "data" in line]

    def saw(self, key: str) -> bool:
        return any(key in line for line in self.lines())

    @property
    def job_id(self) -> str:
        return str(self.lines()[0]["job_id"])


@pytest.fixture
def follow(stack: HostStack) -> Iterator[list[Follower]]:
    made: list[Follower] = []
    yield made
    for follower in made:
        stop_process(follower.proc)


def test_a_cut_off_client_reattaches_with_last_event_id(
    stack: HostStack, follow: list[Follower]
) -> None:
    stack.relay(), stack.worker("w1", "--models", "tiny")
    follower = Follower(stack, stack.gateway(GENQ_API_KEYS=KEY), 120, BODY)
    follow.append(follower)
    wait_for(lambda: len(follower.events()) >= 10, 60, "the stream to flow to the client")
    stack.network["client"].cut()
    wait_for(lambda: follower.saw("lost"), 30, "the client to notice it is cut off")
    stack.network["client"].restore()
    assert follower.proc.wait(timeout=300) == 0
    assert follower.saw("done") and not follower.saw("gave_up")
    events = [event for event in follower.events() if event.data != "[DONE]"]
    ids = [position(event.id) for event in events]
    assert ids == sorted(set(ids))  # no repeat, in order
    job = record(stack.settings, follower.job_id)
    assert job.state == JobState.SUCCEEDED and job.result is not None
    assert "".join(event.text for event in events) == job.result.text  # and no gap


def test_a_client_away_past_the_reattach_grace_has_its_job_cancelled(
    stack: HostStack, follow: list[Follower]
) -> None:
    stack.relay(), stack.worker("w1", "--models", "tiny")
    gateway = stack.gateway(GENQ_API_KEYS=KEY, GENQ_REATTACH_GRACE_S="2")
    # Longer than the socket buffers on the way hold, as a job that outlives the grace is:
    # the gateway's sends then block, and it ends the stream (its send timeout).
    follower = Follower(stack, gateway, 0, {**BODY, "max_tokens": 1_000_000})
    follow.append(follower)
    wait_for(lambda: len(follower.events()) >= 10, 60, "the stream to flow to the client")
    stack.network["client"].cut()
    job_id = follower.job_id
    wait_for(lambda: record(stack.settings, job_id).state == JobState.CANCELLED, 120, "a cancel")
