"""Per-model routing: a job's Celery queue is named after its model's device class and the
model (`cpu.tiny`), and a worker consumes the queues of the models it serves on its device
class, so that a job is only ever taken by a worker that can run its model.

`serving()` works out what a worker serves from its settings (`GENQ_DEVICE`,
`GENQ_WORKER_MODELS`), with each model's plan (genq.common.plan: slots, context, batch), and checks,
before it takes any job, that it can: `genq worker` runs it before starting celery, and the
worker process again at start (`celery -A genq.workers.app worker`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from genq.common.errors import WorkerConfigError
from genq.common.plan import LlamaPlan, ModelPlan, resolve
from genq.common.registry import (
    BUILT_IN,
    AnyModelConfig,
    LlamaModelConfig,
    ModelRegistry,
    RemoteModelConfig,
)
from genq.common.schemas import Device
from genq.common.settings import Settings

# llama-cpp-python with CUDA: compiled from source (needs the CUDA toolkit's nvcc).
CUDA_BUILD = (
    'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
)


def queue_name(device: str, model: str) -> str:
    """The Celery queue of a model's jobs: `<device class>.<model>`, e.g. `cpu.tiny`."""
    return f"{device}.{model}"


def queue_device(queue: str) -> str:
    """The device class in a queue's name."""
    return queue.partition(".")[0]


def model_queue(registry: ModelRegistry, model: str) -> str:
    """The queue a job for `model` goes to; UnknownModel for a model the registry lacks."""
    return queue_name(registry.get(model).device, model)


def worker_command(device: str, model: str) -> str:
    """The command that starts a worker for `model`, for messages."""
    gpu = " --device gpu" if device == "gpu" else ""
    return f"genq worker --models {model}{gpu}"


@dataclass(frozen=True)
class Serving:
    """What one worker serves: its device class and its models' plans, so its queues."""

    device: Device
    plans: tuple[ModelPlan, ...]

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(plan.model for plan in self.plans)

    @property
    def slots(self) -> int:
        """Jobs at once in one worker process: the most any of its models takes."""
        return max(plan.slots for plan in self.plans)

    @property
    def queues(self) -> list[str]:
        return [queue_name(self.device, model) for model in self.models]

    @property
    def queue_slots(self) -> dict[str, int]:
        """Jobs at once per queue: its model's slots (what workers.celery.admission lets in)."""
        return {queue_name(self.device, plan.model): plan.slots for plan in self.plans}


def serving(settings: Settings, registry: ModelRegistry) -> Serving:
    """The worker's models (every one of its device class unless `worker_models` names some),
    each checked; WorkerConfigError (a RegistryError) naming the first problem."""
    device = settings.device
    models = settings.worker_models or tuple(registry.names(device))
    if not models:
        raise WorkerConfigError(
            f"no model of device class {device!r} in the registry ({registry.origin}); add "
            f"one with device = {device!r} or start the worker with another --device"
        )
    configs = [_served(registry, name, device) for name in models]
    if device == "gpu" and any(isinstance(c, LlamaModelConfig) for c in configs):
        check_gpu()
    plans = resolve(settings, registry)
    for name in models:
        _check_plan(registry, plans[name])
    return Serving(device, tuple(plans[name] for name in models))


def worker_slots(settings: Settings, registry: ModelRegistry) -> int:
    """Jobs a worker process of these settings runs at once: the most slots of the models it
    serves (their plans'). Names it does not know are left to `serving` to report."""
    names = settings.worker_models or tuple(registry.names(settings.device))
    plans = resolve(settings, registry)
    return max((plans[name].slots for name in names if name in plans), default=settings.slots)


def _served(registry: ModelRegistry, name: str, device: Device) -> AnyModelConfig:
    if name in registry.missing:
        raise WorkerConfigError(
            f"built-in model {name!r} is not installed here; install it with: "
            f"{registry.missing[name]}"
        )
    if name not in registry.models:
        raise WorkerConfigError(
            f"unknown model {name!r} in --models (GENQ_WORKER_MODELS); the registry "
            f"({registry.origin}) has: {', '.join(registry.names())}"
        )
    config = registry.models[name]
    where = registry.where(name)
    if config.device != device:
        raise WorkerConfigError(
            f"{where} is a {config.device} model: a --device {device} worker does not serve "
            f"it; start one with: {worker_command(config.device, name)}"
        )
    if isinstance(config, LlamaModelConfig):
        _check_local(registry, name, config)
    else:
        _check_remote(where, config)
    return config


def _check_local(registry: ModelRegistry, name: str, config: LlamaModelConfig) -> None:
    where = registry.where(name)
    if config.device == "gpu" and config.n_gpu_layers == 0:
        raise WorkerConfigError(
            f"{where} is a gpu model with n_gpu_layers = 0, so it would run on the CPU; set "
            "n_gpu_layers = -1 (every layer) or a layer count, or device = 'cpu'"
        )
    if name in BUILT_IN:
        return  # built in: written on first use
    if not config.path.exists():
        raise WorkerConfigError(f"{where} path {config.path}: no such file")
    if not config.path.is_file():
        raise WorkerConfigError(f"{where} path {config.path}: not a file")


def _check_plan(registry: ModelRegistry, plan: ModelPlan) -> None:
    if isinstance(plan, LlamaPlan) and plan.problem is not None:
        raise WorkerConfigError(f"{registry.where(plan.model)}: {plan.problem}")


def _check_remote(where: str, config: RemoteModelConfig) -> None:
    variable = config.api_key_env
    if variable is not None and not os.environ.get(variable):
        raise WorkerConfigError(
            f"{where} api_key_env: the environment variable {variable} is not set (or empty); "
            "set it to the API key in the worker's environment"
        )


def check_gpu() -> None:
    """WorkerConfigError unless llama-cpp-python can offload to a GPU here: never run gpu
    models on the CPU without a word."""
    import llama_cpp  # the model runtime, only on a machine that starts a worker

    if not llama_cpp.llama_supports_gpu_offload():
        raise WorkerConfigError(
            "--device gpu: this llama-cpp-python cannot offload to a GPU (a CPU-only build, or "
            f"no GPU found). Install a CUDA build with: {CUDA_BUILD} (needs the CUDA toolkit), "
            "or serve these models on the CPU with --device cpu"
        )
