"""workers.backends.models.ModelCache: models loaded on first use, kept while they fit the budget,
the least recently used unloaded first."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from genq.common.errors import UnknownModel
from genq.common.plan import ModelPlan, plan_model
from genq.common.registry import AnyModelConfig, LlamaModelConfig, ModelRegistry
from genq.workers.backends.models import ModelCache

MB = 1024 * 1024


@dataclass
class FakeBackend:
    name: str
    closed: list[str]

    def close(self) -> None:
        self.closed.append(self.name)


@dataclass
class Loads:
    loaded: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    def __call__(
        self, name: str, config: AnyModelConfig, path: Path | None, plan: ModelPlan
    ) -> Any:
        assert isinstance(config, LlamaModelConfig)
        assert path == config.path and plan.model == name
        self.loaded.append(name)
        return FakeBackend(name, self.closed)


def registry(tmp_path: Path, sizes_mb: dict[str, float]) -> ModelRegistry:
    models = {}
    for name, size in sizes_mb.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(b"\0" * int(size * MB))
        models[name] = LlamaModelConfig(path=path)
    return ModelRegistry(models, tmp_path)


def cache(tmp_path: Path, budget_mb: float, **sizes_mb: float) -> tuple[ModelCache, Loads]:
    loads = Loads()
    models_registry = registry(tmp_path, sizes_mb)
    plans = {name: plan_model(name, c) for name, c in models_registry.models.items()}
    models = ModelCache(models_registry, plans, int(budget_mb * MB), load=loads)
    return models, loads


def test_a_model_is_loaded_once_and_kept(tmp_path: Path) -> None:
    models, loads = cache(tmp_path, 0, a=1)
    assert models.get("a") is models.get("a")
    assert loads.loaded == ["a"]


def test_without_a_budget_every_model_stays_loaded(tmp_path: Path) -> None:
    models, loads = cache(tmp_path, 0, a=1, b=1, c=1)
    for name in "abc":
        models.get(name)
    assert models.names == ["a", "b", "c"]
    assert loads.closed == []


def test_the_least_recently_used_model_is_unloaded_to_fit_the_budget(tmp_path: Path) -> None:
    models, loads = cache(tmp_path, 2.5, a=1, b=1, c=1)
    models.get("a")
    models.get("b")
    models.get("a")  # b is now the least recently used
    models.get("c")
    assert loads.closed == ["b"]
    assert models.names == ["a", "c"]
    models.get("b")  # loaded again, unloading a
    assert loads.closed == ["b", "a"]
    assert loads.loaded == ["a", "b", "c", "b"]


def test_a_model_larger_than_the_budget_is_loaded_alone(tmp_path: Path) -> None:
    models, loads = cache(tmp_path, 1.5, a=1, big=3)
    models.get("a")
    models.get("big")
    assert models.names == ["big"]
    assert loads.closed == ["a"]


def test_an_unknown_model_loads_nothing(tmp_path: Path) -> None:
    models, loads = cache(tmp_path, 0, a=1)
    with pytest.raises(UnknownModel, match="unknown model 'zz'"):
        models.get("zz")
    assert loads.loaded == []


def test_a_model_a_job_is_using_is_not_unloaded(tmp_path: Path) -> None:
    models, loads = cache(tmp_path, 1.5, a=1, b=1, c=1)
    with models.use("a"):
        models.get("b")  # over budget: a is in use, so both stay loaded
        assert loads.closed == []
        assert models.names == ["a", "b"]
    models.get("c")  # a is no longer in use: both go, least recently used first
    assert loads.closed == ["a", "b"]
    assert models.names == ["c"]
