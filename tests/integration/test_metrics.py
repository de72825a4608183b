"""Prometheus metrics of real workers and relays: scraped over HTTP before and after known
jobs, the figures move by exactly what the jobs did."""

from __future__ import annotations

import signal
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from genq import Client
from genq.common.frames import WindowFrame
from ops.localstack import Worker, free_port, wait_for
from tests.state import stream_length

from .conftest import Stack
from .test_failover import JOB, at_window, entries, follow

TINY = {"model": "tiny", "device": "cpu"}
KNOWN_JOB: dict[str, Any] = {
    "prompt": "metrics",
    "max_tokens": 37,
    "window_tokens": 16,  # three windows: 16, 16 and 5 tokens
    "seed": 5,
    "ignore_eos": True,
}
Samples = list[tuple[str, dict[str, str], float]]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(
        value
        for sample, have, value in samples
        if sample == name and labels.items() <= have.items()
    )


class Endpoint:
    """A /metrics endpoint, read as differences from a first scrape."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.before = scrape(port)

    def moved(self, name: str, **labels: str) -> float:
        return total(scrape(self.port), name, **labels) - total(self.before, name, **labels)

    def now(self, name: str, **labels: str) -> float:
        return total(scrape(self.port), name, **labels)

    def wait(self, name: str, at_least: float, **labels: str) -> None:
        wait_for(lambda: self.moved(name, **labels) >= at_least, 30, f"{name} +{at_least}")


def metrics_worker(stack: Stack, name: str, *args: str) -> Endpoint:
    """A worker with an endpoint; its metrics directory in the test's (a killed worker
    cannot remove its own)."""
    port = free_port()
    stack.worker(name, *args, GENQ_METRICS_PORT=str(port), TMPDIR=str(stack.logs))
    return Endpoint(port)


def metrics_relay(stack: Stack, tmp_path: Path) -> Endpoint:
    """A relay with an endpoint, started with a PROMETHEUS_MULTIPROC_DIR it must ignore."""
    port = free_port()
    missing = str(tmp_path / "no-such-dir")
    stack.relay(GENQ_RELAY_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=missing)
    return Endpoint(port)


def test_a_known_job_moves_worker_and_relay_figures_by_what_it_did(
    make_stack: Callable[[], Stack], tmp_path: Path
) -> None:
    stack = make_stack()
    relay = metrics_relay(stack, tmp_path)
    worker = metrics_worker(stack, "a")
    with Client(stack.settings) as client:
        result = client.submit(**KNOWN_JOB).result(timeout=60)
        frames = stream_length(client.redis, client.keys, result.job_id)
        windows = sum(isinstance(f, WindowFrame) for f in entries(client, result.job_id))
    assert result.usage.completion_tokens == 37 and windows == 3
    worker.wait("genq_jobs_total", 1, outcome="succeeded", **TINY)  # counted after its record
    assert worker.moved("genq_tokens_generated_total", **TINY) == 37
    assert worker.moved("genq_windows_completed_total", **TINY) == windows
    assert worker.moved("genq_jobs_total", **TINY) == 1
    assert worker.moved("genq_first_token_seconds_count", **TINY) == 1
    assert worker.moved("genq_job_duration_seconds_count", outcome="succeeded", **TINY) == 1
    assert worker.now("genq_active_jobs", **TINY) == 0
    assert worker.now("genq_resumes_total", **TINY) == 0
    relay.wait("genq_relay_frames_total", frames)
    assert relay.now("genq_relay_lag_seconds") >= 0
    assert relay.now("genq_relay_redis_up") == 1


def test_a_worker_sums_its_pool_processes(make_stack: Callable[[], Stack]) -> None:
    stack = make_stack()
    stack.relay()
    worker = metrics_worker(stack, "a", "-c", "2")
    with Client(stack.settings) as client:
        jobs = [client.submit(**{**JOB, "seed": seed}) for seed in (1, 2)]
        # Each pool process runs one job at a time: two running at once are in two processes.
        wait_for(lambda: worker.now("genq_active_jobs", **TINY) == 2, 60, "both jobs running")
        tokens = sum(job.result(timeout=90).usage.completion_tokens for job in jobs)
    worker.wait("genq_jobs_total", 2, outcome="succeeded", **TINY)
    assert worker.moved("genq_tokens_generated_total", **TINY) == tokens == 2 * JOB["max_tokens"]
    assert worker.now("genq_active_jobs", **TINY) == 0


def test_a_worker_with_slots_counts_each_of_its_concurrent_jobs(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.relay()
    worker = metrics_worker(stack, "a", "--slots", "3")
    with Client(stack.settings) as client:
        jobs = [client.submit(**{**JOB, "seed": seed}) for seed in (1, 2, 3)]
        # One process, three jobs running at once: one job per thread, each counted.
        wait_for(lambda: worker.now("genq_active_jobs", **TINY) == 3, 60, "three jobs running")
        tokens = sum(job.result(timeout=90).usage.completion_tokens for job in jobs)
    worker.wait("genq_jobs_total", 3, outcome="succeeded", **TINY)
    assert worker.moved("genq_tokens_generated_total", **TINY) == tokens == 3 * JOB["max_tokens"]
    assert worker.moved("genq_first_token_seconds_count", **TINY) == 3
    assert worker.now("genq_active_jobs", **TINY) == 0


def test_lone_jobs_and_bundles_in_one_pool_process_count_into_one_set_of_figures(
    make_stack: Callable[[], Stack],
) -> None:
    """A lone job and a bundle are two Celery tasks; one pool process (-c 1) runs both, in
    turn: a lone job, a batch of bundles, a lone job again."""
    stack = make_stack()
    stack.relay()
    worker = metrics_worker(stack, "a")
    lines = [
        {"custom_id": f"b{n}", "prompt": "m", "model": "tiny", "max_tokens": 3, "seed": n}
        | {"ignore_eos": True}
        for n in range(32)  # enough for bundles of two (genq.producer.bundles)
    ]
    with Client(stack.settings) as client:
        first = client.submit(**KNOWN_JOB).result(timeout=60)
        batch = client.submit_batch(lines)
        batch.wait(timeout=120)
        results = list(batch.results(wait=False))
        last = client.submit(**KNOWN_JOB).result(timeout=60)
    assert [r.status for r in results] == ["succeeded"] * 32
    tokens = sum(r.usage.completion_tokens for r in results if r.usage)
    tokens += first.usage.completion_tokens + last.usage.completion_tokens
    assert tokens == 2 * 37 + 32 * 3
    worker.wait("genq_jobs_total", 34, outcome="succeeded", **TINY)
    assert worker.moved("genq_tokens_generated_total", **TINY) == tokens
    assert worker.now("genq_active_jobs", **TINY) == 0


def test_queue_depth_counts_the_messages_waiting_at_every_priority(
    make_stack: Callable[[], Stack], tmp_path: Path
) -> None:
    stack = make_stack()
    relay = metrics_relay(stack, tmp_path)
    depth = {"queue": "cpu.tiny", **TINY}
    assert relay.now("genq_queue_depth", **depth) == 0
    assert relay.now("genq_relay_redis_up") == 1
    with Client(stack.settings) as client:  # no worker yet: they wait
        jobs = [client.submit(**KNOWN_JOB, priority=p) for p in (9, 5, 0)]
        assert relay.now("genq_queue_depth", **depth) == 3
        stack.worker("a")
        for job in jobs:
            job.result(timeout=60)
    assert relay.now("genq_queue_depth", **depth) == 0


def test_a_killed_workers_job_counts_as_requeued_and_resumed(
    make_stack: Callable[[], Stack], tmp_path: Path
) -> None:
    stack = make_stack()
    relay = metrics_relay(stack, tmp_path)
    workers = {name: metrics_worker(stack, name) for name in ("a", "b")}
    killed: list[str] = []

    def kill() -> None:
        holder = stack.holder(client, job.job_id)
        killed.append(holder.name)
        holder.signal(signal.SIGKILL)

    with Client(stack.settings) as client:
        job = client.submit(**JOB)
        follow(client, job.job_id, at_window(3, 0, kill))
    survivor = workers[next(name for name in workers if name not in killed)]
    assert relay.now("genq_relay_requeues_total", **TINY) == 1
    assert relay.now("genq_relay_failed_jobs_total") == 0
    survivor.wait("genq_jobs_total", 1, outcome="succeeded", **TINY)
    assert survivor.now("genq_resumes_total", **TINY) == 1


def test_a_worker_whose_metrics_port_is_taken_still_runs_jobs(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    stack.relay()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack.worker("a", GENQ_METRICS_PORT=str(port))
        with Client(stack.settings) as client:
            assert client.submit(**KNOWN_JOB).result(timeout=60).usage.completion_tokens == 37
    log = (stack.logs / "a.log").read_text()
    assert f"cannot listen on 0.0.0.0 port {port}" in log and "GENQ_METRICS_PORT" in log


def test_a_killed_workers_metrics_directory_is_removed_by_the_next_worker(
    make_stack: Callable[[], Stack],
) -> None:
    stack = make_stack()
    metrics_worker(stack, "a")
    (left,) = stack.logs.glob("genq-metrics-*")
    elsewhere = stack.logs / "genq-metrics-elsewhere"  # another container's, in a shared /tmp
    elsewhere.mkdir()
    (elsewhere / "owner").write_text("another-host 1")
    killed = next(p for p in stack.procs if isinstance(p, Worker) and p.name == "a")
    killed.signal(signal.SIGKILL)  # no chance to remove its directory
    assert killed.proc is not None
    killed.proc.wait(timeout=10)
    assert left.is_dir()

    metrics_worker(stack, "b")
    survivor = next(p for p in stack.procs if isinstance(p, Worker) and p.name == "b")
    assert survivor.proc is not None
    assert not left.exists()
    assert elsewhere.is_dir()
    (mine,) = (d for d in stack.logs.glob("genq-metrics-*") if d != elsewhere)
    host, pid = (mine / "owner").read_text().split()
    assert (host, int(pid)) == (socket.gethostname(), survivor.proc.pid)
