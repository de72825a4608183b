"""The models a worker process has loaded, by name: each is loaded once and kept."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

from common.registry import ModelRegistry
from workers.backends.llama import LlamaBackend


@dataclass
class ModelCache:
    registry: ModelRegistry
    _loaded: dict[str, LlamaBackend] = field(default_factory=dict)

    def get(self, name: str) -> LlamaBackend:
        """The loaded model; ModelLoadError if it cannot be loaded (not cached: a fixed file
        is picked up by the next job)."""
        backend = self._loaded.get(name)
        if backend is None:
            config = self.registry.get(name)
            backend = LlamaBackend(name, config, self.registry.local_path(name))
            self._loaded[name] = backend
            gc.freeze()  # see workers.tasks: the model's objects live as long as the process
        return backend
