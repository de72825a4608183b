"""Several local models in one worker process, kept under its budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from genq import Client
from genq.common.tinymodel import ensure_tiny_model

from .conftest import Stack
from .support import two_models

MB = 1024 * 1024


def test_one_worker_serves_two_local_models_and_its_budget_unloads_the_least_recently_used(
    make_stack: Callable[[], Stack], tmp_path: Path
) -> None:
    registry = two_models(tmp_path / "models")
    one_model_mb = ensure_tiny_model(tmp_path / "models", 1).stat().st_size / MB
    stack = make_stack()
    stack.env.update(
        GENQ_MODELS_FILE=str(registry), GENQ_MODEL_BUDGET_MB=f"{one_model_mb * 1.5:.4f}"
    )
    stack.relay()
    stack.worker("w")
    with Client(stack.settings) as client:
        results = [
            client.submit(prompt="Once", model=model, max_tokens=8, seed=3, ignore_eos=True).result(
                timeout=60
            )
            for model in ("one", "two", "one")
        ]
    assert [r.model for r in results] == ["one", "two", "one"]
    assert all(r.usage.completion_tokens == 8 for r in results)
    assert results[0].text == results[2].text  # the reloaded model is the same model
    lines = (stack.logs / "w.log").read_text().splitlines()

    def events(event: str, model: str) -> int:
        return sum(event in line and f" model={model} " in f"{line} " for line in lines)

    assert (events("model loaded", "one"), events("model loaded", "two")) == (2, 1)
    assert events("model unloaded: least recently used", "one") == 1
    assert events("model unloaded: least recently used", "two") == 1
