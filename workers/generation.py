"""The generation loop: sample tokens, assemble text, stop, and emit chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from common.frames import TokenData
from common.schemas import FinishReason, JobSpec
from workers.chunks import Chunker
from workers.text import TextAssembler


class TokenBackend(Protocol):
    n_ctx: int

    def prompt_tokens(self, spec: JobSpec) -> list[int]: ...
    def tokens(self, prompt: list[int], spec: JobSpec) -> Iterator[int]: ...
    def is_end(self, token: int) -> bool: ...
    def piece(self, token: int) -> bytes: ...


@dataclass(frozen=True)
class Generated:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


def generate(
    backend: TokenBackend, spec: JobSpec, emit: Callable[[TokenData], None], chunker: Chunker
) -> Generated:
    """Run one job's tokens to the end: end-of-sequence or a stop sequence (`stop`), or
    max_tokens or a full context (`length`). Emitted chunks concatenate to the result text."""
    prompt = backend.prompt_tokens(spec)
    budget = min(spec.max_tokens, backend.n_ctx - len(prompt))
    text = TextAssembler(spec.stop)
    finish, count = FinishReason.LENGTH, 0
    for token in backend.tokens(prompt, spec):
        if not spec.ignore_eos and backend.is_end(token):
            finish = FinishReason.STOP
            break
        count += 1
        chunker.add(token, text.feed(backend.piece(token)))
        if text.stopped:
            finish = FinishReason.STOP
            break
        if count >= budget:
            break
        if chunker.due():
            emit(chunker.take())
    chunker.add_text(text.finish())
    if chunker.pending():
        emit(chunker.take())
    return Generated(text.text, finish, len(prompt), count)
