"""The remote backend against a scripted HTTP server on loopback: requests, retries, SSE
parsing, log probabilities, and how windows end."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from genq.common.errors import RemoteRejected, RemoteUnavailable
from genq.common.frames import TokenData, WindowData
from genq.common.registry import RemoteModelConfig
from genq.common.schemas import FinishReason, JobSpec, TokenLogprob, TopLogprob
from genq.workers.backends.remote import RemoteBackend
from genq.workers.generation.chunks import Chunker
from genq.workers.generation.loop import Generated, generate, window_seed
from genq.workers.generation.resume import Committed

KEY = "sk-test-0123456789"


@dataclass
class Answer:
    status: int = 200
    events: list[dict[str, Any]] = field(default_factory=list)
    done: bool = True  # end with `data: [DONE]`


@dataclass
class Script:
    """Answers in order; records each request's path, headers and JSON body."""

    answers: list[Answer]
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)


def completion(text: str, finish: str | None = None, **choice: Any) -> dict[str, Any]:
    return {"choices": [{"text": text, "finish_reason": finish, **choice}]}


def chat(content: str | None, finish: str | None = None, **choice: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"choices": [{"delta": delta, "finish_reason": finish, **choice}]}


@pytest.fixture
def server() -> Iterator[tuple[ThreadingHTTPServer, Script]]:
    script = Script([])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append((self.path, dict(self.headers.items()), body))
            answer = script.answers.pop(0)
            self.send_response(answer.status)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            if answer.status != 200:
                self.wfile.write(b'{"error": {"message": "scripted failure"}}')
                return
            for event in answer.events:
                self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            if answer.done:
                self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, script
    httpd.shutdown()
    httpd.server_close()


def backend(
    server: tuple[ThreadingHTTPServer, Script], *answers: Answer, **options: Any
) -> tuple[RemoteBackend, Script]:
    httpd, script = server
    script.answers.extend(answers)
    config = RemoteModelConfig(
        backend="remote",
        base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1",
        backoff_s=0.0,
        **options,
    )
    return RemoteBackend("far", config), script


@dataclass
class Sink:
    cancelled: bool = False
    chunks: list[TokenData] = field(default_factory=list)
    windows: list[WindowData] = field(default_factory=list)

    def token(self, data: TokenData, ending: bool = False) -> None:
        self.chunks.append(data)

    def continuation(self, window: int) -> None:
        pass

    def publish_window(self, data: WindowData) -> None:
        self.windows.append(data)


def run(remote: RemoteBackend, **spec: Any) -> Generated:
    job = JobSpec(**{"prompt": "Hi", "seed": 7, **spec})
    return generate(remote, job, Sink(), Chunker(4, 3600.0), Committed())


def test_each_window_is_one_streamed_completion_continuing_from_the_text_so_far(
    server: Any,
) -> None:
    remote, script = backend(
        server,
        Answer(events=[completion("ab"), completion("c", "length")]),
        Answer(events=[completion("d"), completion("e", "length")]),
        window_tokens=2,
    )
    out = run(remote, max_tokens=4, temperature=0.5)
    assert (out.text, out.finish_reason, out.completion_tokens, out.windows) == (
        "abcde",
        FinishReason.LENGTH,
        4,
        2,
    )
    bodies = [body for _, _, body in script.requests]
    assert [body["prompt"] for body in bodies] == ["Hi", "Hiabc"]
    assert [body["max_tokens"] for body in bodies] == [2, 2]
    assert [body["seed"] for body in bodies] == [window_seed(7, 0), window_seed(7, 1)]
    assert bodies[0]["temperature"] == 0.5 and bodies[0]["stream"] is True
    assert "stop" not in bodies[0]  # genq finds stop sequences itself
    assert [path for path, _, _ in script.requests] == ["/v1/completions"] * 2


def test_context_chars_repeats_only_the_latest_output(server: Any) -> None:
    remote, script = backend(
        server,
        Answer(events=[completion("abcdef", "length")]),
        Answer(events=[completion("g", "length")]),
        window_tokens=1,
        context_chars=2,
    )
    run(remote, max_tokens=2)
    assert script.requests[1][2]["prompt"] == "Hief"


def test_a_chat_job_continues_as_the_assistant_and_reads_deltas(server: Any) -> None:
    remote, script = backend(
        server,
        Answer(events=[chat(None), chat("Hel"), chat("lo", "length")]),
        Answer(events=[chat("!"), chat(None, "stop")]),
        window_tokens=2,
    )
    out = run(remote, prompt=None, messages=[{"role": "user", "content": "Hi"}], max_tokens=9)
    assert (out.text, out.finish_reason, out.completion_tokens) == ("Hello!", "stop", 3)
    second = script.requests[1]
    assert second[0] == "/v1/chat/completions"
    assert second[2]["messages"][-1] == {"role": "assistant", "content": "Hello"}


def test_a_stop_sequence_split_across_events_ends_the_text_and_the_stream(server: Any) -> None:
    remote, _ = backend(
        server,
        Answer(events=[completion("one EN"), completion("D two"), completion("x", "length")]),
    )
    out = run(remote, max_tokens=3, stop=["END"])
    assert (out.text, out.finish_reason, out.completion_tokens) == ("one ", "stop", 2)


def test_the_server_ending_a_window_early_starts_the_next_and_ending_empty_ends_the_job(
    server: Any,
) -> None:
    remote, script = backend(
        server,
        Answer(events=[completion("a", "length")]),  # its context is full after one token
        Answer(events=[{"choices": [{"finish_reason": "length"}]}]),  # now nothing fits
        window_tokens=4,
    )
    out = run(remote, max_tokens=8)
    assert (out.text, out.finish_reason, out.completion_tokens, out.windows) == (
        "a",
        FinishReason.LENGTH,
        1,
        2,
    )
    assert len(script.requests) == 2


def test_server_errors_are_retried_then_the_stream_is_read(server: Any) -> None:
    remote, script = backend(
        server,
        Answer(status=503),
        Answer(status=429),
        Answer(events=[completion("ok", "stop")]),
        max_retries=2,
    )
    assert run(remote).text == "ok"
    assert len(script.requests) == 3


def test_retries_spent_raise_remote_unavailable_naming_the_model_and_the_last_error(
    server: Any,
) -> None:
    remote, script = backend(server, *[Answer(status=500)] * 3, max_retries=2)
    with pytest.raises(RemoteUnavailable, match=r"'far'.* failed 3 times, the last with HTTP 500"):
        run(remote)
    assert len(script.requests) == 3


def test_a_client_error_is_not_retried(server: Any) -> None:
    remote, script = backend(server, Answer(status=400), max_retries=5)
    with pytest.raises(RemoteRejected, match="refused the request: HTTP 400"):
        run(remote)
    assert len(script.requests) == 1


def test_a_refused_connection_is_retried_then_reported(server: Any) -> None:
    config = RemoteModelConfig(
        backend="remote", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff_s=0.0
    )
    with pytest.raises(RemoteUnavailable, match="failed 2 times, the last with Connection"):
        run(RemoteBackend("far", config))


def test_a_stream_that_stops_without_a_finish_reason_fails_clearly(server: Any) -> None:
    remote, _ = backend(server, Answer(events=[completion("ab")], done=False))
    with pytest.raises(RemoteUnavailable, match="broke off after 1 tokens of window 0"):
        run(remote, max_tokens=5)


def test_the_api_key_goes_in_the_header_and_never_in_errors(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAR_KEY", KEY)
    remote, script = backend(server, Answer(status=401), api_key_env="FAR_KEY")
    with pytest.raises(RemoteRejected) as failed:
        run(remote)
    assert script.requests[0][1]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in str(failed.value)


def test_sampling_extensions_are_sent_unless_turned_off(server: Any) -> None:
    remote, script = backend(server, Answer(events=[completion("a", "stop")]))
    run(remote, top_k=7, min_p=0.1, ignore_eos=True)
    assert {k: script.requests[0][2][k] for k in ("top_k", "min_p", "ignore_eos")} == {
        "top_k": 7,
        "min_p": 0.1,
        "ignore_eos": True,
    }
    remote, script = backend(
        server, Answer(events=[completion("a", "stop")]), sampling_extensions=False
    )
    run(remote, top_k=7)
    assert not {"top_k", "min_p", "repeat_penalty"} & script.requests[-1][2].keys()


def test_completion_logprobs_become_token_logprobs_in_chunks_and_result(server: Any) -> None:
    lp = {
        "tokens": ["a"],
        "token_logprobs": [-0.5],
        "top_logprobs": [{"b": -2.0, "a": -0.5, "c": -3.0}],
    }
    remote, script = backend(
        server,
        Answer(events=[completion("a", logprobs=lp), completion("a", "length", logprobs=lp)]),
    )
    out = run(remote, max_tokens=2, logprobs=2)
    expected = TokenLogprob(
        token="a",
        logprob=-0.5,
        top=[TopLogprob(token="a", logprob=-0.5), TopLogprob(token="b", logprob=-2.0)],
    )
    assert out.logprobs == [expected, expected]
    assert script.requests[0][2]["logprobs"] == 2


def test_chat_logprobs_are_read_from_content_entries(server: Any) -> None:
    content = [{"token": "H", "logprob": -0.25, "top_logprobs": [{"token": "H", "logprob": -0.25}]}]
    remote, script = backend(
        server, Answer(events=[chat("H", "stop", logprobs={"content": content})])
    )
    out = run(remote, prompt=None, messages=[{"role": "user", "content": "x"}], logprobs=1)
    assert out.logprobs == [
        TokenLogprob(token="H", logprob=-0.25, top=[TopLogprob(token="H", logprob=-0.25)])
    ]
    body = script.requests[0][2]
    assert (body["logprobs"], body["top_logprobs"]) == (True, 1)


def test_a_token_sent_without_its_logprob_still_gets_an_entry_so_entries_stay_aligned(
    server: Any,
) -> None:
    lp = {"tokens": ["a"], "token_logprobs": [None], "top_logprobs": [None]}
    remote, _ = backend(
        server,
        Answer(events=[completion("a", logprobs=lp), completion("bc", "length", logprobs=None)]),
    )
    out = run(remote, max_tokens=2, logprobs=1)
    assert out.logprobs == [
        TokenLogprob(token="a", logprob=None),
        TokenLogprob(token="bc", logprob=None),
    ]
    assert out.completion_tokens == len(out.logprobs)
