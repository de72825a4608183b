"""The serving plan: how one worker process runs each model, resolved once from the model's
registry entry and the worker's settings, and checked before the worker takes a job.

Each value has one rule, here: `slots` is the entry's own, else GENQ_SLOTS (`--slots`); a
local model's `n_batch` is its entry's, at most its `n_ctx` (llama.cpp caps a causal batch at
the context); `threads` is the entry's `n_threads`, else llama-cpp-python's default (half the
CPUs). `genq worker`, the Celery worker process (its pool, genq.common.routing), the model cache
and the llama backend all read the plan; none of them applies a rule of its own.

A plan llama.cpp cannot run is refused at start, with the numbers (`problem`): a context holds
at most LLAMA_MAX_SEQ sequences, and each decode step takes the next token of every running
job, so `slots` may not exceed `n_batch` (llama.cpp aborts the process otherwise, on
`GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)`: it reserves an output per sequence in
a buffer of `n_batch` outputs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from genq.common.registry import AnyModelConfig, LlamaModelConfig, ModelRegistry
from genq.common.settings import Settings

# Sequences one llama.cpp context holds at most (LLAMA_MAX_SEQ in llama-cparams.h).
LLAMA_MAX_SEQ = 256


@dataclass(frozen=True)
class Invariance:
    """What a local model's engine turns off so that a sequence's logits do not depend on its
    batch (see workers.runtime.decoder): recorded here, applied by workers.runtime.decoder (flash
    attention), workers.runtime.weights (repacked weights) and common.adapters.ggml_invariance
    (the tiled matrix product); tests/unit/test_plan.py checks that they agree."""

    flash_attention: bool = False
    weight_repack: bool = False
    tiled_matmul: bool = False


@dataclass(frozen=True)
class ModelPlan:
    """How a worker process serves one model: `slots` jobs at once."""

    model: str
    slots: int


@dataclass(frozen=True)
class LlamaPlan(ModelPlan):
    """A local model's plan: one llama.cpp context of `slots` sequences."""

    n_ctx: int  # tokens per sequence (each slot's KV cache)
    n_batch: int  # tokens per decode step, at most n_ctx
    threads: int
    n_gpu_layers: int
    invariance: Invariance = Invariance()

    @property
    def problem(self) -> str | None:
        """Why llama.cpp cannot run this plan, with the numbers; None when it can."""
        if self.slots > LLAMA_MAX_SEQ:
            return (
                f"{self.slots} slots: a llama.cpp context holds at most {LLAMA_MAX_SEQ} "
                "sequences; give it fewer slots (--slots, GENQ_SLOTS or the entry's `slots`)"
            )
        if self.slots > self.n_batch:
            return (
                f"{self.slots} slots do not fit a decode step of {self.n_batch} tokens (its "
                f"n_batch, at most its n_ctx of {self.n_ctx}): each step takes the next token "
                f"of every running job; give it at most {self.n_batch} slots (--slots, "
                "GENQ_SLOTS or the entry's `slots`), or a larger n_batch and n_ctx"
            )
        return None


def plan_model(name: str, config: AnyModelConfig, default_slots: int = 1) -> ModelPlan:
    """The model's plan; `default_slots` is GENQ_SLOTS, for an entry without `slots`."""
    slots = config.slots or default_slots
    if not isinstance(config, LlamaModelConfig):
        return ModelPlan(name, slots)
    return LlamaPlan(
        name,
        slots,
        n_ctx=config.n_ctx,
        n_batch=min(config.n_batch, config.n_ctx),
        threads=config.n_threads or max((os.cpu_count() or 1) // 2, 1),
        n_gpu_layers=config.n_gpu_layers,
    )


def plan_llama(name: str, config: LlamaModelConfig, default_slots: int = 1) -> LlamaPlan:
    """A local model's plan (plan_model, typed for the llama backend)."""
    plan = plan_model(name, config, default_slots)
    assert isinstance(plan, LlamaPlan)  # a LlamaModelConfig's
    return plan


def resolve(settings: Settings, registry: ModelRegistry) -> dict[str, ModelPlan]:
    """Every registry model's plan under these settings (not checked: see `problem`)."""
    return {
        name: plan_model(name, config, settings.slots) for name, config in registry.models.items()
    }
