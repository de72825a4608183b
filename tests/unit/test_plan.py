"""genq.common.plan: each model's serving plan, resolved once from its registry entry and the
worker's settings, and refused at start when llama.cpp could not run it."""

from __future__ import annotations

import os
from pathlib import Path

import llama_cpp as lc
import pytest

from genq.common.adapters import ggml_invariance
from genq.common.errors import WorkerConfigError
from genq.common.plan import LLAMA_MAX_SEQ, Invariance, LlamaPlan, ModelPlan, plan_llama, plan_model
from genq.common.registry import LlamaModelConfig, ModelRegistry, RemoteModelConfig
from genq.common.routing import serving, worker_slots
from genq.common.settings import Settings
from genq.workers.runtime import decoder, weights


def entry(tmp_path: Path, **fields: object) -> LlamaModelConfig:
    return LlamaModelConfig.model_validate({"path": tmp_path / "model.gguf", **fields})


def test_an_entrys_own_slots_win_over_the_workers_default(tmp_path: Path) -> None:
    assert plan_model("m", entry(tmp_path), default_slots=8).slots == 8
    assert plan_model("m", entry(tmp_path, slots=2), default_slots=8).slots == 2
    remote = RemoteModelConfig(backend="remote", base_url="http://h:8000/v1")
    assert plan_model("r", remote, default_slots=4) == ModelPlan("r", 4)


def test_a_decode_step_holds_at_most_the_context() -> None:
    small = plan_llama("m", LlamaModelConfig(path=Path("m.gguf"), n_ctx=32, n_batch=512))
    assert (small.n_ctx, small.n_batch) == (32, 32)
    large = plan_llama("m", LlamaModelConfig(path=Path("m.gguf"), n_ctx=4096, n_batch=512))
    assert (large.n_ctx, large.n_batch) == (4096, 512)


def test_threads_are_the_entrys_or_half_the_cpus(tmp_path: Path) -> None:
    assert plan_llama("m", entry(tmp_path, n_threads=3)).threads == 3
    assert plan_llama("m", entry(tmp_path)).threads == max((os.cpu_count() or 1) // 2, 1)


def test_the_plan_records_the_invariance_settings_the_engine_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = plan_llama("m", LlamaModelConfig(path=Path("m.gguf"))).invariance
    assert recorded == Invariance(flash_attention=False, weight_repack=False, tiled_matmul=False)
    assert decoder.FLASH_ATTN == lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
    assert weights.EXTRA_BUFTS is recorded.weight_repack
    monkeypatch.delenv(ggml_invariance.TILED_MM, raising=False)
    ggml_invariance.make_invariant()
    assert os.environ[ggml_invariance.TILED_MM] == "0"


def test_more_slots_than_a_decode_step_holds_is_a_problem_with_the_numbers() -> None:
    config = LlamaModelConfig(path=Path("m.gguf"), n_ctx=32)
    assert plan_llama("m", config, default_slots=32).problem is None
    problem = plan_llama("m", config, default_slots=64).problem
    assert problem is not None
    assert problem.startswith(
        "64 slots do not fit a decode step of 32 tokens (its n_batch, at most its n_ctx of 32)"
    )
    assert "give it at most 32 slots" in problem


def test_more_sequences_than_llama_cpp_holds_is_a_problem() -> None:
    plan = LlamaPlan("m", LLAMA_MAX_SEQ + 1, n_ctx=4096, n_batch=4096, threads=1, n_gpu_layers=0)
    assert plan.problem is not None
    assert f"at most {LLAMA_MAX_SEQ} sequences" in plan.problem


def small_context_registry(tmp_path: Path) -> Path:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")  # not read: the plan is checked from the entry alone
    path = tmp_path / "models.toml"
    path.write_text(f'[models.tiny32]\nbackend = "llama"\npath = "{gguf}"\nn_ctx = 32\n')
    return path


def test_a_worker_refuses_more_slots_than_a_step_holds_before_it_starts(tmp_path: Path) -> None:
    models = small_context_registry(tmp_path)
    settings = Settings(models_file=models, worker_models="tiny32", slots=64, cache_dir=tmp_path)
    registry = ModelRegistry.from_settings(settings)
    with pytest.raises(WorkerConfigError) as refused:
        serving(settings, registry)
    assert str(refused.value).startswith(
        f"model registry {models}: [models.tiny32]: 64 slots do not fit a decode step of 32"
    )
    # The pool is sized before that check runs, from the same plans.
    assert worker_slots(settings, registry) == 64
    fits = settings.model_copy(update={"slots": 32})
    assert serving(fits, registry).slots == 32
