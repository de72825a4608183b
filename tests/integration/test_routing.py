"""Per-model routing: a job is taken only by a worker that serves its model; workers check at
start that they can serve their models, and record themselves in Redis while they run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from genq import AsyncClient, Client, Settings, WorkerInfo
from genq.common.registry import ModelRegistry
from genq.common.schemas import JobRecord, JobState
from genq.common.store import presence, run
from genq.common.tinymodel import ensure_tiny_model
from ops.localstack import Worker, settings_for, wait_for
from tests.state import job_record

from .conftest import Stack
from .support import run_genq, two_models

START_TIMEOUT_S = 30  # a worker that cannot start says so in well under this
WIDE = {"COLUMNS": "200"}  # tables on one line per row


def record(client: Client, job_id: str) -> JobRecord:
    return job_record(client.redis, client.keys, job_id)


def test_a_job_waits_for_a_worker_of_its_model_and_status_says_which_to_start(
    make_stack: Callable[[], Stack], tmp_path: Path
) -> None:
    stack = make_stack()
    stack.env["GENQ_MODELS_FILE"] = str(two_models(tmp_path / "models"))
    stack.relay()
    stack.worker("one", "--models", "one")
    with Client(stack.settings) as client:
        waiting = client.submit("Once", model="two", max_tokens=4, seed=1)
        served = client.submit("Once", model="one", max_tokens=4, seed=1)
        assert served.result(timeout=60).model == "one"  # submitted later, finished first
        before = record(client, waiting.job_id)
        assert (before.state, before.attempts, before.queue) == (JobState.QUEUED, 0, "cpu.two")

        shown = run_genq({**stack.env, **WIDE}, "status", waiting.job_id)
        assert shown.returncode == 0, shown.stderr
        assert "no running worker serves model two (queue cpu.two)" in shown.stdout
        assert "start one with: genq worker --models two" in shown.stdout
        as_json = json.loads(run_genq(stack.env, "status", waiting.job_id, "--json").stdout)
        assert as_json["waiting"].startswith("no running worker serves model two")
        ran = run_genq(stack.env, "run", "Once", "--model", "two", "--timeout", "1")
        assert ran.returncode != 0  # nothing served it within the timeout
        assert "waiting: no running worker serves model two (queue cpu.two)" in ran.stderr
        assert "genq worker --models two" in ran.stderr

        stack.worker("two", "--models", "two")
        assert waiting.result(timeout=60).model == "two"
        after = record(client, waiting.job_id)
        assert after.worker.startswith("two@") and after.attempts == 1
        served_json = json.loads(run_genq(stack.env, "status", served.job_id, "--json").stdout)
        assert served_json["waiting"] is None


def write_registry(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


BAD_REGISTRIES = {
    "unknown-backend": (
        '[models.big]\nbackend = "vllm"\npath = "/m/big.gguf"\n',
        "unknown backend",
    ),
    "missing-path": (
        '[models.big]\nbackend = "llama"\npath = "/models/big.gguf"\n',
        "path /models/big.gguf: no such file",
    ),
    "duplicate-names": (
        '[models.big]\nbackend = "llama"\npath = "/a.gguf"\n'
        '[models.big]\nbackend = "llama"\npath = "/b.gguf"\n',
        "declared twice",
    ),
    "unset-api-key": (
        '[models.big]\nbackend = "remote"\nbase_url = "http://h:8000/v1"\n'
        'api_key_env = "GENQ_TEST_UNSET_KEY"\n',
        "GENQ_TEST_UNSET_KEY is not set",
    ),
}


@pytest.mark.parametrize("case", BAD_REGISTRIES)
def test_worker_with_a_bad_registry_exits_at_once_naming_the_file_and_entry(
    genq_env: dict[str, str], tmp_path: Path, case: str
) -> None:
    text, problem = BAD_REGISTRIES[case]
    registry = write_registry(tmp_path, text)
    proc = run_genq(
        {**genq_env, "GENQ_MODELS_FILE": str(registry)}, "worker", timeout_s=START_TIMEOUT_S
    )
    assert proc.returncode == 2
    assert f"model registry {registry}: [models.big]" in proc.stderr
    assert problem in proc.stderr
    assert "Traceback" not in proc.stderr


def test_gpu_worker_without_a_gpu_refuses_to_start_and_says_how_to_get_one(
    genq_env: dict[str, str], tmp_path: Path
) -> None:
    gguf = ensure_tiny_model(tmp_path)
    registry = write_registry(
        tmp_path,
        f'[models.big]\nbackend = "llama"\npath = "{gguf}"\ndevice = "gpu"\nn_gpu_layers = -1\n',
    )
    env = {**genq_env, "GENQ_MODELS_FILE": str(registry)}
    proc = run_genq(env, "worker", "--device", "gpu", timeout_s=START_TIMEOUT_S)
    assert proc.returncode == 2
    assert "cannot offload to a GPU" in proc.stderr
    assert 'CMAKE_ARGS="-DGGML_CUDA=on"' in proc.stderr and "--device cpu" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_worker_refuses_an_unknown_model_or_one_of_another_device_class(
    genq_env: dict[str, str], tmp_path: Path
) -> None:
    registry = write_registry(
        tmp_path, '[models.big]\nbackend = "llama"\npath = "/x.gguf"\ndevice = "gpu"\n'
    )
    env = {**genq_env, "GENQ_MODELS_FILE": str(registry)}
    unknown = run_genq(env, "worker", "--models", "tiny,nope", timeout_s=START_TIMEOUT_S)
    assert unknown.returncode == 2
    known = ", ".join(ModelRegistry.from_settings(settings_for(env)).names())  # gemma too?
    assert "unknown model 'nope'" in unknown.stderr and f"has: {known}\n" in unknown.stderr
    other = run_genq(env, "worker", "--models", "big", timeout_s=START_TIMEOUT_S)
    assert other.returncode == 2
    assert "[models.big] is a gpu model" in other.stderr
    assert "genq worker --models big --device gpu" in other.stderr


def test_plain_celery_worker_makes_the_same_checks(genq_env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "genq.workers.app", "worker"],
        env={**os.environ, **genq_env, "GENQ_WORKER_MODELS": "nope"},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 2
    assert "genq worker: error: unknown model 'nope'" in proc.stderr


def test_workers_lists_a_running_worker_with_its_models_and_queues(
    genq_env: dict[str, str], worker: Worker
) -> None:
    assert worker.proc is not None
    proc = run_genq(genq_env, "workers", "--json")
    assert proc.returncode == 0, proc.stderr
    (found,) = [w for w in json.loads(proc.stdout) if w["pid"] == worker.proc.pid]
    assert found["name"].startswith("genq@")
    served = ModelRegistry.from_settings(settings_for(genq_env)).names("cpu")  # gemma if installed
    assert served[0] == "broken" and served[-1] == "tiny"
    assert (found["device"], found["models"]) == ("cpu", served)
    assert found["queues"] == [f"cpu.{name}" for name in served]
    table = run_genq({**genq_env, **WIDE}, "workers")
    assert found["name"] in table.stdout and "broken, " in table.stdout


def test_both_clients_list_the_running_workers(settings: Settings, worker: Worker) -> None:
    async def listed() -> list[WorkerInfo]:
        async with AsyncClient(settings) as client:
            return await client.workers()

    assert worker.proc is not None
    with Client(settings) as client:
        found = client.workers()
    assert worker.proc.pid in {info.pid for info in found}
    # the same workers (a heartbeat between the two reads may change `heartbeat_ms`)
    assert [(i.name, i.pid) for i in asyncio.run(listed())] == [(i.name, i.pid) for i in found]


def test_a_stopped_worker_leaves_at_once_and_a_killed_one_after_missed_heartbeats(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.env["GENQ_HEARTBEAT_INTERVAL_S"] = "0.2"
    stopped, killed = stack.worker("stopped"), stack.worker("killed")
    with Client(stack.settings) as client:

        def names() -> set[str]:
            return {w.name.partition("@")[0] for w in client.workers()}

        assert names() == {"stopped", "killed"}
        stopped.stop()
        assert names() == {"killed"}
        killed.signal(signal.SIGKILL)
        wait_for(lambda: not names(), 10, "the killed worker's record to expire")
        assert run(client.redis, presence.names(client.keys)) == []  # the reader dropped its name
