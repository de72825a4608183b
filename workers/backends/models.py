"""The models a worker process has loaded, by name: loaded on first use and kept while they
fit the process's budget (`Settings.model_budget_mb`, counted in model file sizes, which is
what a memory-mapped GGUF model occupies); the least recently used are unloaded first."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from genq.common.logs import fields
from genq.common.plan import LlamaPlan, ModelPlan
from genq.common.registry import AnyModelConfig, LlamaModelConfig, ModelRegistry
from genq.common.settings import redact_url
from genq.workers.backends.llama import LlamaBackend
from genq.workers.backends.remote import RemoteBackend
from genq.workers.generation.loop import Backend

log = logging.getLogger(__name__)
MB = 1024 * 1024


class LoadedModel(Backend, Protocol):
    def close(self) -> None: ...


Loader = Callable[[str, AnyModelConfig, Path | None, ModelPlan], LoadedModel]


def load_backend(
    name: str, config: AnyModelConfig, path: Path | None, plan: ModelPlan
) -> LoadedModel:
    if isinstance(config, LlamaModelConfig):
        # ModelCache passes a local model's file, and its plan
        assert path is not None and isinstance(plan, LlamaPlan)
        return LlamaBackend(name, config, path, plan)
    return RemoteBackend(name, config)


@dataclass
class _Loaded:
    backend: LoadedModel
    size: int  # bytes of its file; 0 for a remote model
    users: int = 0  # jobs running on it: never unloaded under them


@dataclass
class ModelCache:
    registry: ModelRegistry
    plans: Mapping[str, ModelPlan]  # every registry model's (genq.common.plan.resolve)
    budget_bytes: int = 0  # 0: no limit
    load: Loader = load_backend
    _loaded: OrderedDict[str, _Loaded] = field(default_factory=OrderedDict)
    # Job threads share the cache (a worker with slots): one loads a model, the others wait.
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def names(self) -> list[str]:
        """Loaded models, least recently used first."""
        return list(self._loaded)

    @contextmanager
    def use(self, name: str) -> Iterator[LoadedModel]:
        """The loaded model, kept loaded while the block runs (a job on it)."""
        with self._lock:
            backend = self.get(name)
            self._loaded[name].users += 1
        try:
            yield backend
        finally:
            with self._lock:
                if name in self._loaded:
                    self._loaded[name].users -= 1

    def get(self, name: str) -> LoadedModel:
        """The loaded model; ModelLoadError if it cannot be loaded (not cached: a fixed file
        is picked up by the next job)."""
        with self._lock:
            return self._get(name)

    def _get(self, name: str) -> LoadedModel:
        loaded = self._loaded.get(name)
        if loaded is not None:
            self._loaded.move_to_end(name)
            return loaded.backend
        config = self.registry.get(name)
        path: Path | None = None
        if isinstance(config, LlamaModelConfig):
            path = self.registry.local_path(name)
            source, size = str(path), path.stat().st_size if path.is_file() else 0
        else:
            source, size = redact_url(config.base_url), 0
        self._make_room(size)
        started = time.monotonic()
        backend = self.load(name, config, path, self.plans[name])
        self._loaded[name] = _Loaded(backend, size)
        log.info(
            "model loaded",
            extra=fields(
                model=name,
                source=source,
                load_s=round(time.monotonic() - started, 2),
                size_mb=round(size / MB, 1),
                loaded=len(self._loaded),
                loaded_mb=round(self.loaded_bytes / MB, 1),
            ),
        )
        gc.freeze()  # see genq.workers.celery.tasks: the model's objects live until it is unloaded
        return backend

    @property
    def loaded_bytes(self) -> int:
        return sum(loaded.size for loaded in self._loaded.values())

    def _make_room(self, size: int) -> None:
        """Unload the least recently used models until `size` more bytes fit the budget
        (a model larger than the whole budget is still loaded, alone)."""
        if not self.budget_bytes:
            return
        while self.loaded_bytes + size > self.budget_bytes:
            idle = [name for name, loaded in self._loaded.items() if not loaded.users]
            if not idle:
                return  # every loaded model is in use: over budget until a job ends
            name = idle[0]
            loaded = self._loaded.pop(name)
            loaded.backend.close()
            log.info(
                "model unloaded: least recently used, and the next would exceed the budget",
                extra=fields(
                    model=name,
                    needed_mb=round(size / MB, 1),
                    budget_mb=round(self.budget_bytes / MB, 1),
                ),
            )
