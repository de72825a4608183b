"""Prompt rendering and token counting, the same on both sides.

The worker renders and tokenizes with its loaded model; the producer does the same with the
model's vocabulary alone (llama-cpp-python's `vocab_only`, no weights) to reject a prompt that
cannot fit the context before anything is queued, tokenizing at most a prefix that already
cannot fit (`prefix_bytes`), and checks `logit_bias` ids against the vocabulary's size (read
from the GGUF file's metadata). The runtime is imported lazily, so a producer without the GGUF
file simply leaves those checks to the worker.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from genq.common import ggufmeta
from genq.common.errors import InvalidJob, PromptTooLong
from genq.common.ggufmeta import Vocabulary
from genq.common.registry import TEMPLATE_KEY, LlamaModelConfig, ModelRegistry
from genq.common.schemas import ROLES, ChatMessage, JobSpec, Role

if TYPE_CHECKING:
    from llama_cpp import Llama

Labels = Mapping[Role, str]


def file_template(llm: Llama) -> str | None:
    """The chat template in the model's file, if it has one."""
    template: str | None = llm.metadata.get(TEMPLATE_KEY) or None
    return template


def chat_template(llm: Llama, config: LlamaModelConfig | None) -> str | None:
    """The template a chat is rendered with: the entry's, else the file's; None: neither."""
    return (config.chat_template if config else None) or file_template(llm)


def render_transcript(messages: list[ChatMessage], labels: Labels | None) -> str:
    """For models without a chat template: one `label: content` line per message (the label
    is the role's name unless the entry names another), then the assistant's label."""
    names = transcript_labels(labels)
    lines = [f"{names[m.role]}: {m.content}" for m in messages]
    return "\n".join([*lines, f"{names['assistant']}:"])


def transcript_labels(labels: Labels | None) -> dict[Role, str]:
    return {role: (labels or {}).get(role, role) for role in ROLES}


def implicit_stops(llm: Llama, spec: JobSpec, config: LlamaModelConfig | None) -> list[str]:
    """Where a chat rendered as a transcript ends: where the model starts the next role line
    (a base model goes on writing both sides of the conversation). Held back and cut like the
    job's own stop sequences, so the next role line is never shown."""
    if spec.messages is None or chat_template(llm, config):
        return []
    labels = transcript_labels(config.chat_labels if config else None)
    return [f"\n{label}:" for label in dict.fromkeys(labels.values())]


def render_chat(llm: Llama, messages: list[ChatMessage], template: str) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def special(token_id: int) -> str:
        return llm.detokenize([token_id], special=True).decode("utf-8", "replace")

    formatter = Jinja2ChatFormatter(
        template, eos_token=special(llm.token_eos()), bos_token=special(llm.token_bos())
    )
    chat: Any = [m.model_dump() for m in messages]
    rendered: str = formatter(messages=chat).prompt
    return rendered


def prompt_text(
    llm: Llama, spec: JobSpec, config: LlamaModelConfig | None = None
) -> tuple[str, bool]:
    """The text the model is fed, and whether a BOS goes before it. A chat template writes its
    own BOS (llama-cpp-python's convention); a plain prompt and a transcript get one added
    (measured on gemma-3-270m: without it, the transcript's answer is `<h2><h2>...`)."""
    if spec.messages is not None and (template := chat_template(llm, config)):
        return render_chat(llm, spec.messages, template), False
    if spec.messages is not None:
        return render_transcript(spec.messages, config.chat_labels if config else None), True
    return spec.prompt or "", True


def prompt_tokens(llm: Llama, spec: JobSpec, config: LlamaModelConfig | None = None) -> list[int]:
    """Token ids the model is fed (see `prompt_text`)."""
    text, add_bos = prompt_text(llm, spec, config)
    tokens: list[int] = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
    return tokens


def check_context(n_prompt: int, n_ctx: int, model: str, whole: bool = True) -> None:
    """At least one token must fit after the prompt (`whole`: n_prompt counts all of it; else
    a prefix of it)."""
    if n_prompt >= n_ctx:
        size = f"{n_prompt}" if whole else f"at least {n_prompt}"
        raise PromptTooLong(
            f"prompt is {size} tokens; model {model!r} has a context of {n_ctx} tokens"
        )


def prefix_bytes(n_ctx: int, longest: int) -> int:
    """A prompt's bytes beyond which no tokenization can fit `n_ctx` tokens: each token covers
    at most `longest` bytes (see genq.common.ggufmeta.Vocabulary). One token more, so that a prefix
    cut back to a character boundary still holds that many."""
    return (n_ctx + 1) * longest


def count_tokens(llm: Llama, text: bytes, add_bos: bool, limit: int) -> tuple[int, bool]:
    """The tokens of `text`, or of its first `limit` bytes when it is longer: (count, whether
    it is the whole text's). Tokenizing a run with no spaces costs the square of its length
    (a million characters: minutes); a prefix of `prefix_bytes` already tells a prompt that
    does not fit."""
    whole = len(text) <= limit
    if not whole:
        while limit > 0 and text[limit] & 0xC0 == 0x80:  # not inside a UTF-8 character
            limit -= 1
        text = text[:limit]
    return len(llm.tokenize(text, add_bos=add_bos, special=True)), whole


@dataclass
class PromptCounter:
    """Producer-side checks against a model's vocabulary (read from its GGUF file when the
    producer has it): prompts that cannot fit the context, `logit_bias` ids outside the
    vocabulary. Holds one vocabulary-only model per GGUF file; safe to call from several
    threads (an async producer checks off its event loop)."""

    registry: ModelRegistry
    _vocabs: dict[str, Any] = field(default_factory=dict)
    _sizes: dict[str, Vocabulary | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_fits(self, spec: JobSpec, model: LlamaModelConfig) -> None:
        # Every token covers at least one byte: a plain prompt with fewer UTF-8 bytes than the
        # context has tokens fits whatever the vocabulary, and needs no vocabulary loaded.
        if spec.prompt is not None and len(spec.prompt.encode("utf-8")) + 1 < model.n_ctx:
            return
        llm, vocab = self._vocab(spec.model), self.vocabulary(spec.model)
        if llm is None:
            return
        text, add_bos = prompt_text(llm, spec, model)
        data = text.encode("utf-8")
        limit = prefix_bytes(model.n_ctx, vocab.longest) if vocab else len(data)
        count, whole = count_tokens(llm, data, add_bos, limit)
        if not whole and count < model.n_ctx:  # a tokenizer that normalizes text shorter
            count, whole = count_tokens(llm, data, add_bos, len(data))
        check_context(count, model.n_ctx, spec.model, whole)

    def check_bias(self, spec: JobSpec) -> None:
        """InvalidJob for a logit_bias id outside the model's vocabulary."""
        vocab = self.vocabulary(spec.model) if spec.logit_bias else None
        if vocab is None:
            return
        outside = [token for token in spec.logit_bias if token >= vocab.size]
        if outside:
            raise InvalidJob(
                f"logit_bias: token id {min(outside)} is outside model {spec.model!r}'s "
                f"vocabulary of {vocab.size} tokens (ids 0-{vocab.size - 1})"
            )

    def vocabulary(self, name: str) -> Vocabulary | None:
        """The model's vocabulary, from its file's metadata; None without a readable file."""
        with self._lock:
            if name not in self._sizes:
                self._sizes[name] = self._read_vocabulary(name)
            return self._sizes[name]

    def _read_vocabulary(self, name: str) -> Vocabulary | None:
        path = self.registry.local_path(name)
        try:
            return ggufmeta.vocabulary(path) if path.is_file() else None
        except (OSError, ValueError):
            return None  # an unreadable file is reported by the worker that tries to run it

    def _vocab(self, name: str) -> Any:
        # One load at a time: each swaps file descriptor 2 (see _quiet_stderr), and two at once
        # would leave it pointing at /dev/null.
        with self._lock:
            if name not in self._vocabs:
                self._vocabs[name] = self._load(name)
            return self._vocabs[name]

    def _load(self, name: str) -> Any:
        path = self.registry.local_path(name)
        if not path.is_file():
            return None  # the file lives on worker machines only: the worker checks
        try:
            from llama_cpp import Llama
        except ImportError:
            return None
        try:
            with _quiet_stderr():
                return Llama(model_path=str(path), vocab_only=True, verbose=False)
        except (ValueError, RuntimeError):
            return None  # an unloadable file is reported by the worker that tries to run it


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """llama.cpp warns about the context of a vocabulary-only load (it has none) on file
    descriptor 2, past llama-cpp-python's log filter; a producer's terminal should not see it."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
