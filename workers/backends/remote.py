"""The remote backend: a model behind an OpenAI-compatible server (vLLM, llama.cpp's server,
llama-cpp-python's, a hosted API), streamed over SSE from /v1/completions, or
/v1/chat/completions for chat jobs.

Each window is one streaming request that continues from the text generated so far: the
prompt plus that text (a chat job gets it as a trailing assistant message). Stop sequences
are not sent to the server: genq's loop finds them, whatever the chunk boundaries, and closes
the stream, so they behave as on a local model. A request that fails before its first token
(429, 5xx, a refused or dropped connection, a timeout) is retried with exponential backoff;
a stream that breaks after it fails the job with a clear error. The same seed does not
promise the same text: servers batch requests, and a resumed job continues from committed
text rather than replaying sampler state.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from genq.common.errors import RemoteRejected, RemoteUnavailable
from genq.common.registry import RemoteModelConfig
from genq.common.schemas import FinishReason, JobSpec, TokenLogprob, TopLogprob
from genq.common.settings import redact_url
from genq.workers.generation.loop import Piece, window_seed
from genq.workers.generation.resume import Committed

log = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
BACKOFF_CAP_S = 30.0
ERROR_BODY_CHARS = 300


class RemoteBackend:
    """A remote model's endpoint. Holds no connection between windows (a stream's socket is
    closed when its window ends), so it is safe to keep across jobs."""

    def __init__(self, name: str, config: RemoteModelConfig) -> None:
        self.name, self.config = name, config
        url = urlsplit(config.base_url)
        self.https = url.scheme == "https"
        self.host = url.hostname or ""
        self.port = url.port or (443 if self.https else 80)
        self.root = url.path.rstrip("/")
        self.where = redact_url(config.base_url)  # for messages: never a password or a key
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    def close(self) -> None:
        """Nothing to free (the worker's model budget calls this on every backend)."""

    def session(self, spec: JobSpec) -> RemoteSession:
        return RemoteSession(self, spec)

    def open(
        self, path: str, body: dict[str, Any]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """POST a streaming request; retries what may succeed later, with backoff. Raises
        RemoteUnavailable when the retries are spent, RemoteRejected on a 4xx answer."""
        cfg = self.config
        payload = json.dumps(body).encode("utf-8")
        for attempt in range(cfg.max_retries + 1):
            conn = self._connection()
            try:
                conn.request("POST", self.root + path, payload, self._headers)
                resp = conn.getresponse()
                if resp.status == 200:
                    if conn.sock is not None:
                        conn.sock.settimeout(cfg.read_timeout_s)
                    return conn, resp
                problem = f"HTTP {resp.status}: {_excerpt(resp.read(4096))}"
                resp.close()
                conn.close()
                if resp.status not in RETRY_STATUSES:
                    raise RemoteRejected(
                        f"model {self.name!r}: {self.where}{path} refused the request: {problem}"
                    )
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                problem = _describe(exc)
            if attempt == cfg.max_retries:
                break
            delay = min(cfg.backoff_s * 2**attempt, BACKOFF_CAP_S)
            log.warning(
                "model %s: %s%s: %s; retry %d of %d in %.1fs",
                self.name,
                self.where,
                path,
                problem,
                attempt + 1,
                cfg.max_retries,
                delay,
            )
            time.sleep(delay)
        raise RemoteUnavailable(
            f"model {self.name!r}: {self.where}{path} failed {cfg.max_retries + 1} times, "
            f"the last with {problem}"
        )

    def _connection(self) -> http.client.HTTPConnection:
        timeout = self.config.connect_timeout_s
        if self.https:
            context = ssl.create_default_context()
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


@dataclass
class RemoteSession:
    backend: RemoteBackend
    spec: JobSpec
    prompt_tokens: int = 0  # from the server's usage report, when it sends one
    room: int = sys.maxsize  # the server checks its own context
    end: FinishReason | None = None
    stops: Sequence[str] = ()  # the server renders chats itself
    finish: str | None = None  # the server's finish reason for the current window
    generated: list[str] = field(default_factory=list)
    default_window: int = 0

    def __post_init__(self) -> None:
        self.default_window = self.backend.config.window_tokens

    def close(self) -> None:
        """Nothing held between windows (each window's stream closes with it)."""

    def replay(self, committed: Committed) -> bytes:
        self.generated = [committed.text] if committed.text else []
        return committed.text.encode("utf-8")

    def pieces(self, window: int, size: int, started: int = 0) -> Generator[Piece]:
        spec, backend = self.spec, self.backend
        chat = spec.messages is not None
        path = "/chat/completions" if chat else "/completions"
        self.finish = None
        conn, resp = backend.open(path, self._body(window, size))
        produced = 0
        try:
            for event in _events(resp):
                for piece in self._pieces(event, chat):
                    produced += 1
                    yield piece
        except (OSError, http.client.HTTPException) as exc:
            raise RemoteUnavailable(
                f"model {backend.name!r}: the stream from {backend.where}{path} broke off "
                f"after {produced} tokens of window {window}: {_describe(exc)}"
            ) from exc
        finally:  # an early close tells the server to stop generating
            resp.close()
            conn.close()
        if self.finish is None:
            raise RemoteUnavailable(
                f"model {backend.name!r}: the stream from {backend.where}{path} broke off "
                f"after {produced} tokens of window {window}, without a finish reason"
            )
        # `length` before the window's size: the server's context is full. The next window
        # repeats less output when `context_chars` is set; once nothing fits, the job ends.
        if self.finish != "length" or produced == 0:
            self.end = FinishReason.LENGTH if self.finish == "length" else FinishReason.STOP

    def _body(self, window: int, size: int) -> dict[str, Any]:
        spec, cfg = self.spec, self.backend.config
        so_far = "".join(self.generated)
        if cfg.context_chars is not None:
            so_far = so_far[len(so_far) - cfg.context_chars :] if cfg.context_chars else ""
        body: dict[str, Any] = {
            "model": cfg.model or self.backend.name,
            "max_tokens": size,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "seed": window_seed(spec.seed or 0, window),
        }
        if spec.messages is not None:
            messages = [m.model_dump() for m in spec.messages]
            if so_far:
                messages.append({"role": "assistant", "content": so_far})
            body["messages"] = messages
            if spec.logprobs is not None:
                body["logprobs"] = True
                body["top_logprobs"] = spec.logprobs
        else:
            body["prompt"] = (spec.prompt or "") + so_far
            if spec.logprobs is not None:
                body["logprobs"] = spec.logprobs
        if spec.logit_bias:
            body["logit_bias"] = {str(k): v for k, v in spec.logit_bias.items()}
        if cfg.sampling_extensions:
            body.update(top_k=spec.top_k, min_p=spec.min_p, repeat_penalty=spec.repeat_penalty)
            if spec.ignore_eos:
                body["ignore_eos"] = True
            if so_far and spec.messages is not None:  # vLLM: continue the assistant message
                body.update(continue_final_message=True, add_generation_prompt=False)
        return body

    def _pieces(self, event: dict[str, Any], chat: bool) -> list[Piece]:
        usage = event.get("usage")
        if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
            self.prompt_tokens = int(usage["prompt_tokens"])
        choices = event.get("choices") or []
        if not choices:
            return []
        choice = choices[0]
        if chat:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            logprobs = (choice.get("logprobs") or {}).get("content") or []
            probs = [_chat_logprob(entry) for entry in logprobs]
        else:
            text = choice.get("text")
            probs = _completion_logprobs(choice.get("logprobs"))
        if choice.get("finish_reason") is not None:
            self.finish = str(choice["finish_reason"])
        if text is None:
            return []
        self.generated.append(text)  # what the next window's request continues from
        top = self.spec.logprobs
        probs = [] if top is None else [p.model_copy(update={"top": p.top[:top]}) for p in probs]
        if top is not None and not probs:
            # Asked for, but not given (llama-cpp-python's server sends text it held back
            # without them): an entry all the same, so that entries stay one per token.
            probs = [TokenLogprob(token=text, logprob=None)]
        # An event is a token; one with several tokens' log probabilities counts as that many.
        first = Piece(None, text.encode("utf-8"), probs[0] if probs else None)
        return [first, *(Piece(None, b"", prob) for prob in probs[1:])]


def sse_data(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    """An OpenAI-style SSE stream's `data:` payloads, up to `[DONE]`."""
    for raw in resp:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line.removeprefix(b"data:").strip()
        if data == b"[DONE]":
            return
        yield data


def _events(resp: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The payloads as JSON objects; a payload that is not one, or an error event, raises."""
    for data in sse_data(resp):
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise http.client.HTTPException(f"not a JSON event: {_excerpt(data)}") from exc
        if isinstance(event, dict) and "error" in event:
            raise http.client.HTTPException(f"the server sent an error: {_excerpt(data)}")
        if isinstance(event, dict):
            yield event


def _completion_logprobs(raw: Any) -> list[TokenLogprob]:
    """/v1/completions' form: parallel lists `tokens`, `token_logprobs`, `top_logprobs`."""
    if not isinstance(raw, dict):
        return []
    tokens, values = raw.get("tokens") or [], raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or [None] * len(tokens)
    out = []
    for token, value, top in zip(tokens, values, tops, strict=False):
        alternatives = sorted((top or {}).items(), key=lambda kv: -kv[1])
        out.append(
            TokenLogprob(
                token=token,
                logprob=float(value) if value is not None else None,
                top=[TopLogprob(token=t, logprob=float(v)) for t, v in alternatives],
            )
        )
    return out


def _chat_logprob(entry: dict[str, Any]) -> TokenLogprob:
    """/v1/chat/completions' form: `{token, logprob, top_logprobs: [{token, logprob}]}`."""
    return TokenLogprob(
        token=entry.get("token", ""),
        logprob=None if entry.get("logprob") is None else float(entry["logprob"]),
        top=[
            TopLogprob(token=alt.get("token", ""), logprob=float(alt.get("logprob", 0.0)))
            for alt in entry.get("top_logprobs") or []
        ],
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _excerpt(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return text if len(text) <= ERROR_BODY_CHARS else text[:ERROR_BODY_CHARS] + "…"
