"""genq.common.registry: the built-in `tiny` and `gemma-3-270m` models plus the models of a TOML
file. Whether gemma's package is installed is given to the registry (`installed`), so that
these tests hold on machines with and without it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from genq.common import gemma
from genq.common.errors import RegistryError, UnknownModel
from genq.common.registry import GEMMA, ModelRegistry
from genq.common.settings import Settings
from genq.common.tinymodel import TINY_N_CTX, tiny_model_path

MISTRAL = """
[models.mistral-7b]
backend = "llama"
path = "/models/mistral-7b-instruct.Q4_K_M.gguf"
n_ctx = 8192
n_gpu_layers = -1
device = "gpu"
"""

LoadRegistry = Callable[[str | bytes], ModelRegistry]


def nothing_installed(_package: str) -> bool:
    return False


def everything_installed(_package: str) -> bool:
    return True


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    return tmp_path / "models.toml"


@pytest.fixture
def load(tmp_path: Path, registry_file: Path) -> LoadRegistry:
    """Write a registry file and build a registry from it."""

    def load(content: str | bytes) -> ModelRegistry:
        if isinstance(content, str):
            content = content.encode()
        registry_file.write_bytes(content)
        settings = Settings(models_file=registry_file, cache_dir=tmp_path / "cache")
        return ModelRegistry.from_settings(settings, nothing_installed)

    return load


def test_without_a_file_only_tiny_exists(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, tiny_seed=3)
    registry = ModelRegistry.from_settings(settings, nothing_installed)
    assert registry.names() == ["tiny"]
    tiny = registry.llama("tiny")
    assert tiny.n_ctx == TINY_N_CTX
    assert tiny.path == tiny_model_path(tmp_path, 3)
    assert tiny.device == "cpu"


def test_file_models_are_added_next_to_tiny(load: LoadRegistry) -> None:
    registry = load(MISTRAL + '\n[models.phi]\npath = "phi.gguf"\nbackend = "llama"\n')
    assert registry.names() == ["mistral-7b", "phi", "tiny"]
    mistral = registry.llama("mistral-7b")
    assert mistral.path == Path("/models/mistral-7b-instruct.Q4_K_M.gguf")
    assert (mistral.n_ctx, mistral.n_gpu_layers, mistral.device) == (8192, -1, "gpu")


def test_file_model_options_default(load: LoadRegistry) -> None:
    phi = load('[models.phi]\nbackend = "llama"\npath = "phi.gguf"\n').llama("phi")
    assert (phi.n_ctx, phi.n_gpu_layers, phi.device, phi.n_threads) == (4096, 0, "cpu", None)


def test_empty_file_keeps_only_tiny(load: LoadRegistry) -> None:
    assert load("").names() == ["tiny"]


@pytest.mark.parametrize(
    ("content", "entry", "problem"),
    [
        ('[models.x]\nbackend = "onnx"\npath = "x.gguf"\n', "[models.x] backend",
         "unknown backend 'onnx'; expected 'llama', 'remote'"),
        ('[models.x]\nbackend = "llama"\n', "[models.x] path", "Field required"),
        ('[models.x]\nbackend = "llama"\npath = "x"\nn_ctx = 8\n', "[models.x] n_ctx",
         "greater than or equal to 16"),
        ('[models.x]\nbackend = "llama"\npath = "x"\nn_ctx = 2097152\n', "[models.x] n_ctx",
         "less than or equal to 1048576"),
        ('[models.x]\nbackend = "llama"\npath = "x"\ndevice = "tpu"\n', "[models.x] device",
         "'cpu' or 'gpu'"),
        ('[models.x]\nbackend = "llama"\npath = "x"\nn_layers = 3\n', "[models.x] n_layers",
         "Extra inputs are not permitted"),
        ('[modles.x]\nbackend = "llama"\npath = "x"\n', "modles", "Extra inputs are not permitted"),
        ("[models.tiny]\npath = 'mine.gguf'\n", "[models.tiny]", "built in"),
        ("[models.gemma-3-270m]\npath = 'g.gguf'\n", "[models.gemma-3-270m]", "built in"),
        ('[models.x]\npath = "x"\n', "[models.x] backend", "missing; expected 'llama' or"),
        ('[models."a b"]\nbackend = "llama"\npath = "x"\n', "[models.a b] name", "pattern"),
    ],
    ids=["unknown-backend", "missing-path", "n_ctx-too-small", "n_ctx-too-large",
         "unknown-device", "unknown-key", "unknown-table", "tiny-redefined", "gemma-redefined",
         "missing-backend", "name-not-a-queue-name"],
)  # fmt: skip
def test_bad_entry_raises_registry_error_naming_file_and_entry(
    load: LoadRegistry, registry_file: Path, content: str, entry: str, problem: str
) -> None:
    with pytest.raises(RegistryError) as caught:
        load(MISTRAL + content)
    message = str(caught.value)
    assert message.startswith(f"model registry {registry_file}: ")
    assert entry in message
    assert problem in message
    assert "mistral" not in message  # the valid entry is not blamed


def test_invalid_toml_raises_registry_error_naming_the_file(
    load: LoadRegistry, registry_file: Path
) -> None:
    with pytest.raises(RegistryError, match=r"not valid TOML.*line 2") as caught:
        load('[models.x]\npath = "unterminated\n')
    assert str(registry_file) in str(caught.value)


def test_file_that_is_not_utf8_raises_registry_error(
    load: LoadRegistry, registry_file: Path
) -> None:
    with pytest.raises(RegistryError, match=re.escape(f"{registry_file}: not valid TOML")):
        load(b'[models.x]\npath = "\xff.gguf"\n')


def test_missing_file_raises_registry_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    settings = Settings(models_file=missing, cache_dir=tmp_path)
    with pytest.raises(RegistryError, match="cannot read it: No such file") as caught:
        ModelRegistry.from_settings(settings)
    assert str(missing) in str(caught.value)


def test_unreadable_file_raises_registry_error_naming_it(tmp_path: Path) -> None:
    # A directory cannot be read as a file, whoever runs the tests (root ignores modes).
    settings = Settings(models_file=tmp_path, cache_dir=tmp_path)
    with pytest.raises(RegistryError, match=re.escape(f"{tmp_path}: cannot read it")):
        ModelRegistry.from_settings(settings)


def test_unknown_model_lists_the_known_ones(load: LoadRegistry) -> None:
    registry = load(MISTRAL)
    with pytest.raises(UnknownModel, match=r"unknown model 'nope'; known models: mistral-7b, tiny"):
        registry.llama("nope")


def test_local_path_of_tiny_writes_the_model_into_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    settings = Settings(cache_dir=cache, tiny_seed=1)
    registry = ModelRegistry.from_settings(settings, nothing_installed)
    path = registry.local_path("tiny")
    assert path == tiny_model_path(cache, 1) == registry.llama("tiny").path
    assert path.is_file()
    assert path.stat().st_size > 0


def test_local_path_of_a_file_model_is_its_configured_path(load: LoadRegistry) -> None:
    registry = load(MISTRAL)
    assert registry.local_path("mistral-7b") == Path("/models/mistral-7b-instruct.Q4_K_M.gguf")
    assert not registry.cache_dir.exists()  # nothing written for it


def test_models_that_is_not_a_table_raises_registry_error(load: LoadRegistry) -> None:
    with pytest.raises(RegistryError, match="models"):
        load("models = 3\n")


def test_names_of_one_device_class(load: LoadRegistry) -> None:
    registry = load(MISTRAL)
    assert registry.names("gpu") == ["mistral-7b"]
    assert registry.names("cpu") == ["tiny"]


def test_where_names_the_file_and_entry_of_a_model(load: LoadRegistry, registry_file: Path) -> None:
    registry = load(MISTRAL)
    assert registry.where("mistral-7b") == f"model registry {registry_file}: [models.mistral-7b]"
    assert registry.where("tiny") == "built-in model 'tiny'"


def test_gemma_is_built_in_where_its_package_is_installed(tmp_path: Path) -> None:
    if not gemma.installed():
        pytest.skip(f"needs the gemma package: {gemma.INSTALL}")
    registry = ModelRegistry.from_settings(Settings(cache_dir=tmp_path), everything_installed)
    assert registry.names() == [GEMMA, "tiny"]
    entry = registry.llama(GEMMA)
    assert entry.path.parent == tmp_path  # assembled on first use, into the cache
    assert (entry.n_ctx, entry.device, entry.chat_template) == (2048, "cpu", None)
    assert entry.n_threads is not None and entry.n_threads <= 2  # a small machine's share
    assert registry.where(GEMMA) == "built-in model 'gemma-3-270m'"
    assert not tmp_path.joinpath(entry.path.name).exists()  # not assembled by the registry


def test_gemma_without_its_package_is_refused_with_the_install_command(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry.from_settings(Settings(cache_dir=tmp_path), nothing_installed)
    assert GEMMA not in registry.names()  # a worker does not serve it
    assert registry.missing == {GEMMA: "pip install 'genq[gemma]'"}
    with pytest.raises(UnknownModel) as caught:
        registry.get(GEMMA)
    assert str(caught.value) == (
        "built-in model 'gemma-3-270m' is not installed here; install it with: "
        "pip install 'genq[gemma]'"
    )
    with pytest.raises(UnknownModel, match=re.escape("pip install 'genq[gemma]'")):
        registry.local_path(GEMMA)
