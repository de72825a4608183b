"""genq.common.prompts: how a chat is rendered for a model without a chat template, and where its
turn ends."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from genq.common.prompts import implicit_stops, render_transcript
from genq.common.registry import LlamaModelConfig
from genq.common.schemas import ChatMessage, JobSpec

CHAT = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="Capital of France?"),
]


def model(template: str | None = None) -> Any:
    """A loaded model's file metadata, as llama-cpp-python reads it (a template, or none)."""
    return SimpleNamespace(metadata={"tokenizer.chat_template": template} if template else {})


def entry(**fields: Any) -> LlamaModelConfig:
    return LlamaModelConfig(path=Path("m.gguf"), **fields)


def test_a_transcript_labels_lines_with_the_roles_and_ends_with_the_assistants_label() -> None:
    assert (
        render_transcript(CHAT, None) == "system: Be brief.\nuser: Capital of France?\nassistant:"
    )


def test_a_transcript_uses_the_entrys_labels_where_it_names_them() -> None:
    labels = entry(chat_labels={"user": "Question", "assistant": "Answer"}).chat_labels
    assert render_transcript(CHAT, labels) == (
        "system: Be brief.\nQuestion: Capital of France?\nAnswer:"
    )


def test_a_transcript_chat_ends_where_the_model_starts_the_next_role_line() -> None:
    spec = JobSpec(messages=CHAT)
    assert implicit_stops(model(), spec, entry()) == [
        "\nsystem:",
        "\nuser:",
        "\nassistant:",
        "\ntool:",
    ]
    labels = entry(chat_labels={"user": "Question", "assistant": "Answer"})
    assert "\nQuestion:" in implicit_stops(model(), spec, labels)


def test_no_implicit_stop_with_a_template_or_for_a_plain_prompt() -> None:
    chat = JobSpec(messages=CHAT)
    assert implicit_stops(model("{{ messages }}"), chat, entry()) == []
    assert implicit_stops(model(), chat, entry(chat_template="{{ messages }}")) == []
    assert implicit_stops(model(), JobSpec(prompt="Once"), entry()) == []
