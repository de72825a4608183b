"""Small factories shared by the unit tests (no services, no I/O beyond tmp_path)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from genq.common.schemas import FinishReason, JobResult, Timings, Usage

MakeResult = Callable[..., JobResult]


@pytest.fixture(autouse=True)
def no_genq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit tests see only the GENQ_* variables they set themselves, not the caller's."""
    for name in list(os.environ):
        if name.upper().startswith("GENQ_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_result() -> MakeResult:
    """Build a JobResult; keyword arguments override any field."""

    def make(**overrides: Any) -> JobResult:
        fields: dict[str, Any] = {
            "job_id": "0" * 32,
            "model": "tiny",
            "text": "Once upon a time",
            "finish_reason": FinishReason.LENGTH,
            "usage": Usage(prompt_tokens=5, completion_tokens=4),
            "timings": Timings(
                queue_wait_ms=1.5, first_token_ms=12.0, generation_ms=40.0, tokens_per_s=100.0
            ),
        }
        return JobResult(**{**fields, **overrides})

    return make
