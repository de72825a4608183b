"""Coalescing tokens into chunks, so per-token Redis round trips do not cap throughput.

The first token of a job goes out at once (first-token latency), unless `eager` is off (a
bundle's jobs, run for throughput); after that a chunk is flushed when it holds `max_tokens`
tokens or `interval_s` has passed since the last chunk was sent (or since the first token).
The interval counts from when the publish returned (`sent`), not from `take`: on a link
whose round trip outlasts the interval (a worker far from Redis), counting from `take` made
every next token due at once, and every chunk held one token (ops/slowlink_cost.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from genq.common.frames import TokenData
from genq.common.schemas import TokenLogprob


@dataclass
class Chunker:
    max_tokens: int
    interval_s: float
    clock: Callable[[], float] = time.monotonic
    eager: bool = True
    _count: int = 0
    _token_ids: list[int] = field(default_factory=list)
    _text: list[str] = field(default_factory=list)
    _logprobs: list[TokenLogprob] = field(default_factory=list)
    _last_flush: float | None = None

    def add(self, token_id: int | None, text: str, logprob: TokenLogprob | None = None) -> None:
        """A token; its id is None from a backend that has none (a remote model)."""
        self._count += 1
        if token_id is not None:
            self._token_ids.append(token_id)
        if text:
            self._text.append(text)
        if logprob is not None:
            self._logprobs.append(logprob)

    def add_text(self, text: str) -> None:
        if text:
            self._text.append(text)

    def due(self) -> bool:
        if self._last_flush is None:
            if self.eager or not self._count:
                return bool(self._count)
            self._last_flush = self.clock()  # the interval counts from the first token
        if self._count >= self.max_tokens:
            return True
        return bool(self._count) and self.clock() - self._last_flush >= self.interval_s

    def pending(self) -> bool:
        return bool(self._count or self._text)

    def take(self) -> TokenData:
        data = TokenData(
            text="".join(self._text),
            token_ids=self._token_ids,
            tokens=None if len(self._token_ids) == self._count else self._count,
            logprobs=self._logprobs or None,
        )
        self._count, self._token_ids, self._text, self._logprobs = 0, [], [], []
        self._last_flush = self.clock()
        return data

    def sent(self) -> None:
        """The chunk taken last is published: the interval counts from now."""
        self._last_flush = self.clock()
