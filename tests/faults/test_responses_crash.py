"""Background responses survive crashes: a client that dropped resumes with `starting_after`
after the gateway it streamed from was SIGKILLed (on another gateway process), and after the
job's worker was SIGKILLed and the job resumed on another worker. Either way the events are
numbered with no gap and no repeat, and their text is exactly the final `output_text`."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import openai

from genq import Client
from genq.common.frames import ResumeFrame
from ops.localstack import Gateway, wait_for
from tests.integration.conftest import Stack
from tests.integration.gateway_support import TIMEOUT_S, sdk
from tests.integration.test_failover import JOB, entries
from tests.integration.test_gateway_reattach import gateway_of
from tests.integration.test_responses import ended, numbers, texts

BODY: dict[str, Any] = {
    "model": "tiny",
    "input": JOB["prompt"],
    "max_output_tokens": JOB["max_tokens"],
    "background": True,
}
EXTRA = {"seed": JOB["seed"], "window_tokens": JOB["window_tokens"], "ignore_eos": True}


def stack_of(make_stack: Callable[[], Stack], *workers: str) -> tuple[Stack, Gateway]:
    """A stack of its own with a relay, the named workers and a gateway, `first`."""
    stack = make_stack()
    stack.relay()
    for name in workers:
        stack.worker(name)
    return stack, gateway_of(stack, "first")


def stream_some(api: openai.OpenAI, deltas: int, then: Callable[[str], None]) -> list[Any]:
    """Create a background response, stream it up to its `deltas`th text delta, call `then`
    with its job's id, and drop the stream: the events received."""
    events: list[Any] = []
    with api.responses.create(**BODY, stream=True, extra_body=EXTRA) as stream:
        for event in stream:
            events.append(event)
            if sum(1 for e in events if e.type == "response.output_text.delta") == deltas:
                then(events[0].response.id.removeprefix("resp_"))
                break
    return events


def resumed(api: openai.OpenAI, before: list[Any]) -> list[Any]:
    """The events after the last of `before`, to the response's end."""
    response_id, last = before[0].response.id, before[-1].sequence_number
    with api.responses.retrieve(response_id, stream=True, starting_after=last) as stream:
        return list(stream)


def check_whole(api: openai.OpenAI, events: list[Any], expected: str) -> None:
    assert numbers(events) == list(range(len(events)))
    final = ended(api, events[0].response.id)
    assert events[-1].type == "response.incomplete" and final.status == "incomplete"
    assert texts(events) == final.output_text == expected


def test_a_background_stream_resumes_on_another_gateway_after_a_gateway_sigkill(
    make_stack: Callable[[], Stack],
) -> None:
    stack, first = stack_of(make_stack, "a")
    with sdk(first) as api:
        uninterrupted = ended(api, api.responses.create(**BODY, extra_body=EXTRA).id)
        before = stream_some(api, 10, lambda _job: first.signal(signal.SIGKILL))
    second = gateway_of(stack, "second")
    with sdk(second) as api:
        after = resumed(api, before)
        check_whole(api, before + after, uninterrupted.output_text)


def test_a_background_stream_resumes_after_its_worker_is_sigkilled(
    make_stack: Callable[[], Stack],
) -> None:
    stack, gateway = stack_of(make_stack, "a", "b")
    with Client(stack.settings) as client, sdk(gateway) as api:
        uninterrupted = ended(api, api.responses.create(**BODY, extra_body=EXTRA).id)

        def kill_holder(job_id: str) -> None:
            stack.holder(client, job_id).signal(signal.SIGKILL)

        before = stream_some(api, 20, kill_holder)
        job_id = before[0].response.id.removeprefix("resp_")

        def resumes() -> bool:
            return any(isinstance(f, ResumeFrame) for f in entries(client, job_id))

        wait_for(resumes, TIMEOUT_S, "the job to resume on the other worker")
        after = resumed(api, before)
        check_whole(api, before + after, uninterrupted.output_text)
