"""genq.common.routing: queue names, and what a worker serves, checked before it starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import llama_cpp
import pytest

from genq.common import gemma
from genq.common.errors import WorkerConfigError
from genq.common.registry import ModelRegistry
from genq.common.routing import Serving, model_queue, queue_device, queue_name, serving
from genq.common.settings import Settings

Serve = Callable[..., Serving]


def gemma_installed(answer: bool) -> Callable[[str], bool]:
    """The registry's package check, answering `answer` whatever this machine has."""
    return lambda _package: answer


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    """A file where a registry entry says its model is (its contents are not read here)."""
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def registry_file(tmp_path: Path, gguf: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(
        f'[models.small]\nbackend = "llama"\npath = "{gguf}"\n'
        f'[models.big]\nbackend = "llama"\npath = "{gguf}"\ndevice = "gpu"\nn_gpu_layers = -1\n'
        '[models.api]\nbackend = "remote"\nbase_url = "http://h:8000/v1"\n'
    )
    return path


@pytest.fixture
def serve(tmp_path: Path, registry_file: Path) -> Serve:
    """What a worker with these settings serves, against `registry_file`."""

    def serve(installed: bool = False, **fields: object) -> Serving:
        settings = Settings.model_validate(
            {"models_file": registry_file, "cache_dir": tmp_path / "cache", **fields}
        )
        return serving(settings, ModelRegistry.from_settings(settings, gemma_installed(installed)))

    return serve


@pytest.fixture
def gpu_offload(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """Make llama-cpp-python's GPU probe answer yes or no, whatever this machine has."""

    def set_offload(supported: bool) -> None:
        monkeypatch.setattr(llama_cpp, "llama_supports_gpu_offload", lambda: supported)

    return set_offload


def test_queue_name_is_device_class_dot_model() -> None:
    assert queue_name("cpu", "tiny") == "cpu.tiny"
    assert queue_name("gpu", "org/model:q4") == "gpu.org/model:q4"
    assert queue_device("gpu.org/model.v2") == "gpu"


def test_a_models_queue_follows_its_registry_device(tmp_path: Path, registry_file: Path) -> None:
    settings = Settings(models_file=registry_file, cache_dir=tmp_path)
    registry = ModelRegistry.from_settings(settings)
    assert model_queue(registry, "tiny") == "cpu.tiny"
    assert model_queue(registry, "big") == "gpu.big"


def test_a_worker_serves_every_model_of_its_device_class_by_default(serve: Serve) -> None:
    served = serve()
    assert served.device == "cpu" and served.models == ("api", "small", "tiny")
    assert served.queues == ["cpu.api", "cpu.small", "cpu.tiny"]


def test_each_queue_admits_its_models_slots(serve: Serve, registry_file: Path) -> None:
    registry_file.write_text(registry_file.read_text() + "slots = 2\n")  # [models.api]'s
    plan = serve(slots=4)
    assert plan.queue_slots == {"cpu.api": 2, "cpu.small": 4, "cpu.tiny": 4}
    assert plan.slots == 4


def test_a_worker_serves_the_models_it_is_given(serve: Serve) -> None:
    assert serve(worker_models="tiny,small").queues == ["cpu.tiny", "cpu.small"]


def test_an_unknown_model_is_refused_naming_the_known_ones(
    serve: Serve, registry_file: Path
) -> None:
    with pytest.raises(WorkerConfigError, match="unknown model 'nope'") as caught:
        serve(worker_models="tiny,nope")
    assert f"({registry_file}) has: api, big, small, tiny" in str(caught.value)


def test_a_model_of_another_device_class_is_refused_with_the_worker_to_start(
    serve: Serve, registry_file: Path
) -> None:
    with pytest.raises(WorkerConfigError) as caught:
        serve(worker_models="big")
    assert str(caught.value) == (
        f"model registry {registry_file}: [models.big] is a gpu model: a --device cpu worker "
        "does not serve it; start one with: genq worker --models big --device gpu"
    )


def test_a_local_model_whose_file_is_missing_is_refused_naming_file_and_entry(
    serve: Serve, registry_file: Path, gguf: Path
) -> None:
    gguf.unlink()
    with pytest.raises(WorkerConfigError) as caught:
        serve(worker_models="small")
    assert str(caught.value) == (
        f"model registry {registry_file}: [models.small] path {gguf}: no such file"
    )


def test_a_local_model_path_that_is_a_directory_is_refused(
    serve: Serve, gguf: Path, tmp_path: Path
) -> None:
    gguf.unlink()
    gguf.mkdir()
    with pytest.raises(WorkerConfigError, match="not a file"):
        serve(worker_models="small")


def test_the_builtin_tiny_model_needs_no_file_yet(serve: Serve, tmp_path: Path) -> None:
    assert serve(worker_models="tiny").models == ("tiny",)
    assert not (tmp_path / "cache").exists()  # written on first use, by the worker process


def test_the_builtin_gemma_model_needs_no_file_yet(serve: Serve, tmp_path: Path) -> None:
    if not gemma.installed():
        pytest.skip(f"needs the gemma package: {gemma.INSTALL}")
    assert serve(installed=True, worker_models="gemma-3-270m").models == ("gemma-3-270m",)
    assert not (tmp_path / "cache").exists()  # assembled on first use, by the worker process
    assert "gemma-3-270m" in serve(installed=True).models  # served by default where installed


def test_gemma_without_its_package_is_refused_with_the_install_command(serve: Serve) -> None:
    with pytest.raises(WorkerConfigError) as caught:
        serve(installed=False, worker_models="tiny,gemma-3-270m")
    assert str(caught.value) == (
        "built-in model 'gemma-3-270m' is not installed here; install it with: "
        "pip install 'genq[gemma]'"
    )


def test_a_remote_model_needs_its_api_key_variable_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-never-shown"
    registry = tmp_path / "remote.toml"
    registry.write_text(
        '[models.api]\nbackend = "remote"\nbase_url = "http://h/v1"\napi_key_env = "API_KEY_X"\n'
    )
    settings = Settings(models_file=registry, cache_dir=tmp_path, worker_models=("api",))
    monkeypatch.delenv("API_KEY_X", raising=False)
    with pytest.raises(WorkerConfigError) as caught:
        serving(settings, ModelRegistry.from_settings(settings))
    assert "[models.api] api_key_env: the environment variable API_KEY_X is not set" in str(
        caught.value
    )
    monkeypatch.setenv("API_KEY_X", secret)
    assert serving(settings, ModelRegistry.from_settings(settings)).models == ("api",)


def test_a_gpu_worker_without_gpu_offload_is_refused_with_the_cuda_build_command(
    serve: Serve, gpu_offload: Callable[[bool], None]
) -> None:
    gpu_offload(False)
    with pytest.raises(WorkerConfigError) as caught:
        serve(device="gpu")
    message = str(caught.value)
    assert "cannot offload to a GPU" in message
    assert 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir' in message
    assert "--device cpu" in message


def test_a_gpu_worker_with_gpu_offload_serves_the_gpu_models(
    serve: Serve, gpu_offload: Callable[[bool], None]
) -> None:
    gpu_offload(True)
    assert serve(device="gpu").queues == ["gpu.big"]


def test_a_gpu_model_that_offloads_no_layer_is_refused(
    tmp_path: Path, gguf: Path, gpu_offload: Callable[[bool], None]
) -> None:
    gpu_offload(True)
    registry = tmp_path / "zero.toml"
    registry.write_text(f'[models.big]\nbackend = "llama"\npath = "{gguf}"\ndevice = "gpu"\n')
    settings = Settings(models_file=registry, cache_dir=tmp_path, device="gpu")
    with pytest.raises(WorkerConfigError, match="n_gpu_layers = 0, so it would run on the CPU"):
        serving(settings, ModelRegistry.from_settings(settings))


def test_a_device_class_without_models_is_refused(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path, device="gpu")
    with pytest.raises(WorkerConfigError, match="no model of device class 'gpu'"):
        serving(settings, ModelRegistry.from_settings(settings))
