"""The model registry: model names mapped to a backend and its options.

A TOML file (setting `models_file`) holds one table per model::

    [models.mistral-7b]
    backend = "llama"
    path = "/models/mistral-7b-instruct.Q4_K_M.gguf"
    n_ctx = 8192
    n_gpu_layers = -1
    device = "gpu"

The built-in model `tiny` always exists: genq writes it on first use (see common.tinymodel).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.errors import RegistryError, UnknownModel
from common.settings import Settings
from common.tinymodel import TINY_N_CTX, ensure_tiny_model, tiny_model_path

TINY = "tiny"
Device = Literal["cpu", "gpu"]


class LlamaModelConfig(BaseModel):
    """A local GGUF model run by llama-cpp-python."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["llama"] = "llama"
    path: Path = Field(description="GGUF file on the worker machine.")
    n_ctx: int = Field(4096, ge=16, le=1_048_576, description="Context size in tokens.")
    n_threads: int | None = Field(None, ge=1, le=512, description="CPU threads; default: all.")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU; -1: all.")
    n_batch: int = Field(512, ge=1, le=65_536, description="Prompt evaluation batch size.")
    device: Device = Field("cpu", description="Device class; also the Celery queue.")
    chat_template: str | None = Field(
        None, description="Jinja chat template overriding the one in the GGUF file."
    )


ModelConfig = Annotated[LlamaModelConfig, Field(discriminator="backend")]


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, ModelConfig] = Field(default_factory=dict)


@dataclass(frozen=True)
class ModelRegistry:
    models: Mapping[str, LlamaModelConfig]
    cache_dir: Path = field(default_factory=Path)
    tiny_seed: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        tiny = LlamaModelConfig(
            path=tiny_model_path(settings.cache_dir, settings.tiny_seed),
            n_ctx=TINY_N_CTX,
            n_threads=1,
        )
        user = _read_file(settings.models_file) if settings.models_file else {}
        return cls({TINY: tiny, **user}, settings.cache_dir, settings.tiny_seed)

    def names(self) -> list[str]:
        return sorted(self.models)

    def get(self, name: str) -> LlamaModelConfig:
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(self.names())
            raise UnknownModel(f"unknown model {name!r}; known models: {known}") from None

    def local_path(self, name: str) -> Path:
        """The model's file, writing the built-in tiny model on first use."""
        if name == TINY:
            return ensure_tiny_model(self.cache_dir, self.tiny_seed)
        return self.get(name).path


def _read_file(path: Path) -> dict[str, LlamaModelConfig]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"model registry {path}: cannot read it: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"model registry {path}: not valid TOML: {exc}") from exc
    models = raw.get("models", {})
    if isinstance(models, dict) and TINY in models:
        raise RegistryError(
            f"model registry {path}: [models.{TINY}] is built in; pick another name"
        )
    try:
        return dict(_RegistryFile.model_validate(raw).models)
    except ValidationError as exc:
        raise RegistryError(f"model registry {path}: {_describe(exc)}") from exc


def _describe(exc: ValidationError) -> str:
    """One line per problem, naming the entry: `[models.x] n_ctx: ...`."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        if len(loc) >= 2 and loc[0] == "models":
            where = f"[models.{loc[1]}] {'.'.join(loc[3:] or loc[2:])}".rstrip()
        else:
            where = ".".join(loc) or "file"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)
