"""GET /v1/models: the registry's models, in OpenAI's list shape. `ModelList` keeps the
registry read once, and reads it again (off the event loop) only when its file changed: a new
modification time, size or inode (an editor's atomic rename)."""

from __future__ import annotations

from typing import Any

import anyio

from genq.common.registry import ModelRegistry
from genq.common.settings import Settings
from genq.producer.gateway.errors import ID_SHOWN, ApiError, shown

CREATED = 0  # the registry keeps no creation time

Stamp = tuple[int, int, int] | None  # the registry file's mtime (ns), size, inode; None: none


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "genq"}


class ModelList:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._registry: ModelRegistry | None = None
        self._stamp: Stamp = None

    def _file_stamp(self) -> Stamp:
        path = self._settings.models_file
        if path is None:
            return None
        try:
            found = path.stat()
        except OSError:  # gone: reading it says so (RegistryError)
            return None
        return found.st_mtime_ns, found.st_size, found.st_ino

    async def registry(self) -> ModelRegistry:
        """The registry, read again when its file changed since the last read."""
        stamp = self._file_stamp()
        if self._registry is None or stamp != self._stamp:
            read = ModelRegistry.from_settings
            self._registry = await anyio.to_thread.run_sync(read, self._settings)
            self._stamp = stamp
        return self._registry

    async def all(self) -> dict[str, Any]:
        names = (await self.registry()).names()
        return {"object": "list", "data": [model_object(name) for name in names]}

    async def get(self, name: str) -> dict[str, Any]:
        registry = await self.registry()
        if len(name) > ID_SHOWN and name not in registry.models:  # not echoed whole
            message = f"unknown model {shown(name)!r}"
            raise ApiError(404, message, param="model", code="model_not_found")
        registry.get(name)  # UnknownModel: 404
        return model_object(name)
