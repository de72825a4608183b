"""The gateway section's Responses API part: the job streamed with `responses.create` against
the same job as a chat completion, both with the openai SDK through the same gateway, in turn;
a background response of over 2,000 text deltas reattached after its event 1,000
(`responses.retrieve(stream=True, starting_after=...)`), replayed from the job's durable
stream; and the peer servers' `/v1/responses`, where they serve it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from genq import JobSpec
from ops.bench import paths, report
from ops.bench.report import PathResult, Run, met
from ops.bench.stack import Stack

if TYPE_CHECKING:  # imported where used: the other sections run without the SDK installed
    import openai
    from openai.types.responses import ResponseStreamEvent

TARGET_RATIO = 0.95  # Responses tok/s over chat completions tok/s, at least
TARGET_ADDED_MS = 5.0  # first delta's latency over chat's first chunk's, median, at most
TARGET_REATTACH_MS = 20.0  # request to the first replayed event, median, at most
REATTACH_AFTER = 1000  # the `starting_after` of every reattach
REATTACH_DELTAS = 2000  # text deltas the reattached response has, at least
REATTACH_TOKENS = 2100  # its max_output_tokens (tiny-long's n_ctx is 2304)
REATTACHES = 10
WARM_TOKENS = 16  # a peer's first request, unmeasured
DELTA = "response.output_text.delta"
ENDED = {"response.completed", "response.incomplete"}  # by length: max_output_tokens
NOT_FIELDS = {"model", "prompt", "stream", "stream_options", "max_tokens"}  # of a request body


def chat_run(sdk: openai.OpenAI, body: dict[str, Any]) -> Run:
    """One streamed chat completion of a completion request body (its prompt as the user's
    message), clocked from the request to the first text, then to the end by length."""
    extra = {k: v for k, v in body.items() if k not in NOT_FIELDS}
    started, first, finish, tokens = time.perf_counter(), None, None, 0
    for chunk in sdk.chat.completions.create(
        model=body["model"],
        messages=[{"role": "user", "content": body["prompt"]}],
        max_tokens=body["max_tokens"],
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra,
    ):
        for choice in chunk.choices:
            first = time.perf_counter() if first is None and choice.delta.content else first
            finish = choice.finish_reason or finish
        tokens = chunk.usage.completion_tokens if chunk.usage else tokens
    ended = time.perf_counter()
    if first is None or finish != "length":
        raise paths.BenchJobFailed(f"a chat stream ended with {finish!r}, no text: {first}")
    return paths.exact(Run(tokens, first - started, ended - first), body)


def responses_run(sdk: openai.OpenAI, body: dict[str, Any]) -> Run:
    """The same body as one streamed response (`input`, `max_output_tokens`), clocked from the
    request to the first text delta, then to its end. Tokens by the final usage, where the
    server sends it, else one a delta."""
    events = sdk.responses.create(
        model=body["model"],
        input=body["prompt"],
        max_output_tokens=body["max_tokens"],
        stream=True,
        extra_body={k: v for k, v in body.items() if k not in NOT_FIELDS},
    )
    started = time.perf_counter()
    first, deltas, last = _read(events)
    ended = time.perf_counter()
    if first is None or last is None or last.type not in ENDED:
        raise paths.BenchJobFailed(f"a response stream ended with {last and last.type!r}")
    usage = last.response.usage  # an ENDED event has a response
    tokens = usage.output_tokens if usage else deltas
    return paths.exact(Run(tokens, first - started, ended - first), body)


def _read(events: Iterable[ResponseStreamEvent]) -> tuple[float | None, int, Any]:
    """The time of the first text delta, the count of deltas and the last event."""
    first, deltas, last = None, 0, None
    for last in events:
        if last.type == DELTA:
            first = time.perf_counter() if first is None else first
            deltas += 1
    return first, deltas, last


def compare(
    sdk: openai.OpenAI, body: dict[str, Any], warmup: int, jobs: int
) -> tuple[PathResult, list[str]]:
    """The job as a response and as a chat completion, in turn: the responses' result, and
    the table and two targets."""
    pairs = report.alternate(
        lambda: responses_run(sdk, body), lambda: chat_run(sdk, body), warmup + jobs
    )[warmup:]
    responses = PathResult("Responses API via genq serve", [a for a, _ in pairs])
    chat = PathResult("chat completions via genq serve", [b for _, b in pairs])
    rate = responses.tokens_per_s / chat.tokens_per_s
    added = statistics.median(
        (a.first_token_s - b.first_token_s) * report.MS_PER_S for a, b in pairs
    )
    return responses, [
        report.path_table([(responses, report.ratio(responses, chat, "chat")), (chat, "1.00 x")]),
        f"Responses / chat completions tok/s: {rate:.2f} (target >= {TARGET_RATIO:.2f}: "
        f"{met(rate >= TARGET_RATIO)})",
        f"first token added by the Responses API (first delta minus chat's first chunk): "
        f"{added:+.1f} ms median, job by job (target <= {TARGET_ADDED_MS:.0f} ms: "
        f"{met(added <= TARGET_ADDED_MS)})",
    ]


def reattach(stack: Stack, sdk: openai.OpenAI, prompt: str) -> str:
    """A background response of REATTACH_TOKENS tokens on the tiny model, one token a chunk
    (the worker replaced by one with GENQ_CHUNK_TOKENS=1: a text delta a token), read to its
    end, then reattached after event REATTACH_AFTER, once to check that the first event
    replayed is the next one and that the text before it plus the text replayed is the final
    text, then REATTACHES times for the time to the first replayed event."""
    stack.worker("bench").stop()
    stack.env["GENQ_CHUNK_TOKENS"] = "1"
    stack.start_worker()
    path, config = stack.model(report.BENCH_MODEL)
    job = JobSpec(model=report.BENCH_MODEL, prompt=prompt, seed=1, max_tokens=REATTACH_TOKENS)
    spec, _, _ = paths.workload(job, path, config.n_ctx, stray=True, eos=False)
    kept = _background(sdk, {**paths.request_body(spec, None), "window_tokens": spec.max_tokens})
    response_id = kept[0].response.id  # type: ignore[union-attr]  # response.created
    deltas = [e for e in kept if e.type == DELTA]
    before = _text(e for e in deltas if e.sequence_number <= REATTACH_AFTER)
    _, after, replayed = _replay(sdk, response_id)  # unmeasured: it checks what is replayed
    times = [_replay(sdk, response_id)[0] for _ in range(REATTACHES)]
    exact = after == REATTACH_AFTER + 1 and before + replayed == _final(sdk, response_id)
    ms = statistics.median(times)
    return (
        f"reattach after event {REATTACH_AFTER} of a finished background response of "
        f"{len(kept):,} events ({len(deltas):,} text deltas: "
        f"{met(len(deltas) >= REATTACH_DELTAS)}), {REATTACHES} times: first replayed event in "
        f"{ms:.1f} ms median (max {max(times):.1f}; target <= "
        f"{TARGET_REATTACH_MS:.0f} ms: {met(ms <= TARGET_REATTACH_MS)}); it is event {after}, "
        f"and the text before it plus the text replayed is the final output_text: {met(exact)}"
    )


def _background(sdk: openai.OpenAI, body: dict[str, Any]) -> list[ResponseStreamEvent]:
    """A background response of the body, streamed: every event, to its end."""
    return list(
        sdk.responses.create(
            model=body["model"],
            input=body["prompt"],
            max_output_tokens=body["max_tokens"],
            background=True,
            stream=True,
            extra_body={k: v for k, v in body.items() if k not in NOT_FIELDS},
        )
    )


def _replay(sdk: openai.OpenAI, response_id: str) -> tuple[float, int, str]:
    """One reattach after REATTACH_AFTER: ms to its first event, that event's number, and the
    text of every event replayed."""
    started = time.perf_counter()
    with sdk.responses.retrieve(response_id, stream=True, starting_after=REATTACH_AFTER) as events:
        replayed = iter(events)
        first = next(replayed)
        ms = (time.perf_counter() - started) * report.MS_PER_S
        return ms, first.sequence_number, _text([first, *replayed])


def _text(events: Iterable[ResponseStreamEvent]) -> str:
    from openai.types.responses import ResponseTextDeltaEvent

    return "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))


def _final(sdk: openai.OpenAI, response_id: str) -> str:
    return sdk.responses.retrieve(response_id).output_text


def peer(sdk: openai.OpenAI, name: str, body: dict[str, Any], jobs: int) -> PathResult | str:
    """A peer server's Responses stream of the job, `jobs` times; else a line saying why not
    ("not served": a 404)."""
    import openai

    try:
        responses_run(sdk, {**body, "max_tokens": WARM_TOKENS})  # unmeasured
        runs = [responses_run(sdk, body) for _ in range(jobs)]
    except openai.NotFoundError:
        return f"{name}: /v1/responses not served"
    except (openai.APIError, paths.BenchJobFailed) as exc:
        return f"{name}: /v1/responses failed: {exc}"
    return PathResult(f"Responses API via {name}", runs)
