"""Prompt rendering and token counting, the same on both sides.

The worker renders and tokenizes with its loaded model; the producer does the same with the
model's vocabulary alone (llama-cpp-python's `vocab_only`, no weights) to reject a prompt that
cannot fit the context before anything is queued. The runtime is imported lazily, so a
producer without the GGUF file simply leaves that check to the worker.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.errors import PromptTooLong
from common.registry import TEMPLATE_KEY, LlamaModelConfig, ModelRegistry
from common.schemas import ROLES, ChatMessage, JobSpec, Role

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


def prompt_tokens(llm: Llama, spec: JobSpec, config: LlamaModelConfig | None = None) -> list[int]:
    """Token ids the model is fed. A chat template writes its own BOS (llama-cpp-python's
    convention); a plain prompt and a transcript get one added (measured on gemma-3-270m:
    without it, the transcript's answer is `<h2><h2>...`)."""
    if spec.messages is not None and (template := chat_template(llm, config)):
        text, add_bos = render_chat(llm, spec.messages, template), False
    elif spec.messages is not None:
        labels = config.chat_labels if config else None
        text, add_bos = render_transcript(spec.messages, labels), True
    else:
        text, add_bos = spec.prompt or "", True
    tokens: list[int] = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
    return tokens


def check_context(n_prompt: int, n_ctx: int, model: str) -> None:
    """At least one token must fit after the prompt."""
    if n_prompt >= n_ctx:
        raise PromptTooLong(
            f"prompt is {n_prompt} tokens; model {model!r} has a context of {n_ctx} tokens"
        )


@dataclass
class PromptCounter:
    """Producer-side check; holds one vocabulary-only model per GGUF file."""

    registry: ModelRegistry
    _vocabs: dict[str, Any] = field(default_factory=dict)

    def check_fits(self, spec: JobSpec, model: LlamaModelConfig) -> None:
        # Every token covers at least one byte: a plain prompt with fewer UTF-8 bytes than the
        # context has tokens fits whatever the vocabulary, and needs no vocabulary loaded.
        if spec.prompt is not None and len(spec.prompt.encode("utf-8")) + 1 < model.n_ctx:
            return
        llm = self._vocab(spec.model)
        if llm is not None:
            check_context(len(prompt_tokens(llm, spec, model)), model.n_ctx, spec.model)

    def _vocab(self, name: str) -> Any:
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
