"""Flower on a genq stack (`genq flower`): it lists the workers with their queues, device class
and models; shows each task's job, never its prompt; shows a running job's progress and a
finished job's summary; serves its Prometheus metrics; renders its tasks page in a real
browser (headless Chromium); and never shows the Redis password."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from genq import Client
from ops.localstack import Flower, RedisServer, Worker, wait_for

from .conftest import Stack, new_stack

PROMPT = "Flower must never show this prompt: 7c1e-marigold"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
LOOPBACK_API = {"FLOWER_UNAUTHENTICATED_API": "true"}  # Flower's API wants auth otherwise
PROGRESS = re.compile(r"^running: (\d+) tokens")
EVENT_TIMEOUT_S = 30  # a task event reaches Flower well within this
SERVES_TINY = ("--models", "tiny")  # not the session registry's broken model


@pytest.fixture(scope="module")
def stack(
    genq_env: dict[str, str], databases: Iterator[int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A relay and a worker reporting progress every 0.2 s, on a database of their own."""
    stack = new_stack(genq_env, tmp_path_factory.mktemp("flower"), databases)
    stack.env.update(GENQ_PROGRESS_INTERVAL_S="0.2", GENQ_METRICS_PORT="0")
    try:
        stack.relay()
        stack.worker("florist", *SERVES_TINY)
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def flower(stack: Stack) -> Flower:
    flower = stack.flower(**LOOPBACK_API)
    # Flower hears task events only once its receiver listens: the worker's heartbeat says so.
    wait_for(lambda: any(flower.json("/api/workers?status=1").values()), 30, "Flower's events")
    return flower


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.settings) as client:
        yield client


def task_info(flower: Flower, task_id: str) -> dict[str, Any]:
    """Flower's view of a task; {} while Flower has not heard of it."""
    try:
        info: dict[str, Any] = flower.json(f"/api/task/info/{task_id}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return {}
        raise
    return info


def wait_for_state(flower: Flower, task_id: str, state: str) -> dict[str, Any]:
    wait_for(
        lambda: task_info(flower, task_id).get("state") == state,
        EVENT_TIMEOUT_S,
        f"task {task_id} {state} in Flower",
    )
    return task_info(flower, task_id)


@pytest.fixture(scope="module")
def finished_job(flower: Flower, client: Client) -> str:
    """A short job, ended and seen ended by Flower: its id."""
    job = client.submit(PROMPT, max_tokens=24, ignore_eos=True, seed=3)
    assert job.result(timeout=60).usage.completion_tokens == 24
    wait_for_state(flower, f"{job.job_id}-0", "SUCCESS")
    return job.job_id


def test_flower_lists_the_worker_with_its_queue_device_class_and_models(flower: Flower) -> None:
    workers = flower.json("/api/workers?refresh=1")
    name = next(name for name in workers if name.startswith("florist@"))
    worker = workers[name]
    assert [queue["name"] for queue in worker["active_queues"]] == ["cpu.tiny"]
    assert worker["conf"]["genq_device"] == "cpu"
    assert worker["conf"]["genq_models"] == ["tiny"]
    # Where it runs: the address it reaches Redis from (the session's, on loopback).
    assert worker["conf"]["genq_host"] == socket.gethostname()
    assert worker["conf"]["genq_address"] == "127.0.0.1"
    assert worker["conf"]["task_serializer"] == "json"  # the rest of Celery's conf is there too


def test_a_finished_task_shows_its_job_and_summary_but_never_its_prompt(
    flower: Flower, finished_job: str
) -> None:
    tasks = flower.json("/api/tasks")
    task = tasks[f"{finished_job}-0"]
    assert task["name"] == "genq.generate"
    assert task["state"] == "SUCCESS"
    assert task["args"] == f"job={finished_job} epoch=0 model=tiny tenant=default"
    assert (
        task["result"] == f"'job {finished_job} (tenant default): 24 tokens, 1 window, succeeded'"
    )
    task_page = flower.get(f"/task/{finished_job}-0").decode()
    assert finished_job in task_page
    for shown in (json.dumps(tasks), task_page):
        assert "marigold" not in shown


def test_a_running_job_shows_progress_with_growing_tokens_then_succeeds(
    flower: Flower, client: Client
) -> None:
    # Many windows of the tiny model's small context: a few seconds of generation.
    job = client.submit("Once upon a time", max_tokens=12_000, ignore_eos=True, seed=4)
    task_id = f"{job.job_id}-0"
    seen: list[int] = []

    def progress_grew() -> bool:
        info = task_info(flower, task_id)
        assert info.get("state") != "SUCCESS", f"ended before showing progress twice: {seen}"
        match = PROGRESS.match(info.get("result") or "")
        if info.get("state") == "PROGRESS" and match:
            seen.append(int(match[1]))
            assert f"job {job.job_id}" in info["result"]
        return len(set(seen)) >= 2

    wait_for(progress_grew, EVENT_TIMEOUT_S, "two progress reports in Flower")
    assert seen == sorted(seen) and 0 < seen[0] < seen[-1] < 12_000
    done = wait_for_state(flower, task_id, "SUCCESS")  # a late report never overrides it
    assert done["result"].startswith(f"'job {job.job_id} (tenant default): 12000 tokens, ")
    assert done["result"].endswith(" windows, succeeded'")
    assert job.result(timeout=60).usage.completion_tokens == 12_000


def test_flower_metrics_count_the_generate_tasks_events(flower: Flower, finished_job: str) -> None:
    text = flower.get("/metrics").decode()
    counts = {
        sample.labels["type"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "flower_events"
        for sample in family.samples
        if sample.name == "flower_events_total" and sample.labels["task"] == "genq.generate"
    }
    assert counts["task-received"] >= 1
    assert counts["task-succeeded"] >= 1


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium as root in a container: no sandbox, no /dev/shm, a throwaway profile;
    the virtual time budget lets the page's scripts fill the tasks table first."""
    binary = shutil.which("chromium")
    assert binary is not None
    with tempfile.TemporaryDirectory(prefix="genq-chromium-") as profile:
        return subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="no chromium binary (Debian: apt-get install chromium; CI installs it)",
)
def test_the_tasks_page_in_headless_chromium_lists_the_job(
    flower: Flower, finished_job: str
) -> None:
    page = chromium("--dump-dom", f"{flower.url}/tasks")
    assert page.returncode == 0, page.stderr[-2000:]
    row = re.search(rf'<tr id="{finished_job}-0".*?</tr>', page.stdout, re.DOTALL)
    assert row is not None, "the tasks table has no row for the job"
    assert f"job={finished_job} epoch=0 model=tiny" in row[0]
    assert "SUCCESS" in row[0] and "24 tokens" in row[0]

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "flower-tasks.png"
    screenshot.unlink(missing_ok=True)
    shot = chromium("--window-size=1400,900", f"--screenshot={screenshot}", f"{flower.url}/tasks")
    assert shot.returncode == 0, shot.stderr[-2000:]
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000  # a rendered page, not a blank one


def test_flower_never_shows_the_redis_password(genq_env: dict[str, str], tmp_path: Path) -> None:
    password = f"pw-{secrets.token_hex(8)}"
    server = RedisServer(password=password).start()
    env = {**genq_env, "GENQ_REDIS_URL": server.url, "GENQ_METRICS_PORT": "0"}
    worker = flower = None
    try:
        worker = Worker(env=env, log=tmp_path / "worker.log", args=SERVES_TINY, name="guarded")
        worker.start()
        flower = Flower(env={**env, **LOOPBACK_API}, log=tmp_path / "flower.log").start()
        workers = flower.json("/api/workers?refresh=1")
        name = next(name for name in workers if name.startswith("guarded@"))
        assert workers[name]["conf"]["genq_models"] == ["tiny"]  # Flower did reach Redis
        shown = [json.dumps(workers)]
        for path in ("/workers", f"/worker/{name}", "/broker", "/tasks", "/metrics"):
            shown.append(flower.get(path).decode())
        shown.append((tmp_path / "flower.log").read_text())
        assert "Broker: redis://:**@127.0.0.1" in shown[-1]
        for text in shown:
            assert password not in text
    finally:
        for proc in (flower, worker, server):
            if proc is not None:
                proc.stop()


def test_a_worker_with_slots_shows_each_concurrent_job_as_a_task_with_progress(
    genq_env: dict[str, str], databases: Iterator[int], tmp_path: Path
) -> None:
    stack = new_stack(genq_env, tmp_path, databases)
    stack.env.update(GENQ_PROGRESS_INTERVAL_S="0.2", GENQ_METRICS_PORT="0")
    try:
        stack.relay()
        stack.worker("slotted", *SERVES_TINY, "--slots", "2")
        flower = stack.flower(**LOOPBACK_API)
        wait_for(lambda: any(flower.json("/api/workers?status=1").values()), 30, "events")
        with Client(stack.settings) as client:
            jobs = [
                client.submit("Once upon a time", max_tokens=30_000, ignore_eos=True, seed=s)
                for s in (1, 2)
            ]
            tasks = [f"{job.job_id}-0" for job in jobs]

            def both_in_progress() -> bool:
                states = [task_info(flower, task).get("state") for task in tasks]
                assert "SUCCESS" not in states, "a job ended before both showed progress"
                return states == ["PROGRESS", "PROGRESS"]

            wait_for(both_in_progress, EVENT_TIMEOUT_S, "both tasks in progress at once")
            # Each task names the job it ran: with the fair share a task message is a ticket,
            # and the two slots' claims may take the two waiting jobs in either order.
            results = [wait_for_state(flower, task, "SUCCESS")["result"] for task in tasks]
            for job in jobs:
                shown = f"'job {job.job_id} (tenant default): 30000 tokens, "
                assert sum(result.startswith(shown) for result in results) == 1
                assert job.result(timeout=60).usage.completion_tokens == 30_000
    finally:
        stack.stop()
