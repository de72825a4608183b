"""publishing/metrics: a job attempt's figures by model and device class, summed over a worker's
pool processes, and an endpoint that never takes the worker down."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from genq.common.schemas import JobState
from genq.workers.publishing.metrics import PoolCollector, WorkerMetrics, forget_dead, serve
from genq.workers.publishing.observe import AttemptInfo
from ops.localstack import free_port

JOB_ID, BATCH_ID = "a" * 32, "b" * 32
LABELS = {"model": "tiny", "device": "gpu"}


def attempt(epoch: int = 0) -> AttemptInfo:
    return AttemptInfo(JOB_ID, epoch, "tiny", BATCH_ID, "genq@host")


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {**LABELS, **labels})


def test_an_attempt_counts_its_tokens_windows_and_outcome(registry: CollectorRegistry) -> None:
    metrics = WorkerMetrics("gpu", registry)
    observer = metrics.observer(attempt())
    observer.started(attempt(), from_window=0)
    assert value(registry, "genq_active_jobs") == 1
    for count in (1, 16, 16, 4):
        observer.tokens(count)
    observer.window_ended(0, 32)
    observer.window_ended(1, 37)
    observer.ended(JobState.SUCCEEDED, first_token_ms=None)
    assert value(registry, "genq_tokens_generated_total") == 37
    assert value(registry, "genq_windows_completed_total") == 2
    assert value(registry, "genq_jobs_total", outcome="succeeded") == 1
    assert value(registry, "genq_job_duration_seconds_count", outcome="succeeded") == 1
    assert value(registry, "genq_first_token_seconds_count") == 0  # no first token seen
    assert value(registry, "genq_active_jobs") == 0
    assert value(registry, "genq_resumes_total") == 0


def test_first_token_is_measured_from_the_attempts_start(registry: CollectorRegistry) -> None:
    before_s = time.time()
    observer = WorkerMetrics("gpu", registry).observer(attempt())
    observer.started(attempt(), from_window=0)
    first_token_ms = int(before_s * 1000) + 250
    observer.ended("succeeded", first_token_ms)
    assert value(registry, "genq_first_token_seconds_count") == 1
    assert 0.2 < (value(registry, "genq_first_token_seconds_sum") or 0) <= 0.25
    assert value(registry, "genq_first_token_seconds_bucket", le="0.1") == 0
    assert value(registry, "genq_first_token_seconds_bucket", le="0.25") == 1


def test_a_resumed_attempt_counts_as_a_resume(registry: CollectorRegistry) -> None:
    observer = WorkerMetrics("gpu", registry).observer(attempt(epoch=2))
    observer.started(attempt(epoch=2), from_window=3)
    observer.ended("superseded", first_token_ms=None)
    assert value(registry, "genq_resumes_total") == 1
    assert value(registry, "genq_jobs_total", outcome="superseded") == 1


def test_an_attempt_that_fails_before_it_starts_was_never_active(
    registry: CollectorRegistry,
) -> None:
    observer = WorkerMetrics("gpu", registry).observer(attempt())
    observer.ended(JobState.FAILED, first_token_ms=None)  # e.g. its model would not load
    assert value(registry, "genq_active_jobs") == 0
    assert value(registry, "genq_jobs_total", outcome="failed") == 1


def test_labels_are_models_devices_outcomes_tenants_never_ids(registry: CollectorRegistry) -> None:
    metrics = WorkerMetrics("gpu", registry)
    metrics.prime(["tiny", "other"])
    observer = metrics.observer(attempt())
    observer.started(attempt(), from_window=0)
    observer.tokens(5)
    observer.ended(JobState.CANCELLED, first_token_ms=None)
    labels = {
        (name, value)
        for family in registry.collect()
        for sample in family.samples
        for name, value in sample.labels.items()
        if name != "le"
    }
    outcomes = {
        ("outcome", o) for o in ("succeeded", "cancelled", "failed", "superseded", "abandoned")
    }
    tenant = ("tenant", "default")
    assert labels == {("model", "tiny"), ("model", "other"), ("device", "gpu"), tenant, *outcomes}


POOL_PROCESS = """
import sys
from genq.workers.publishing.metrics import WorkerMetrics
from genq.workers.publishing.observe import AttemptInfo

info = AttemptInfo("a" * 32, 0, "tiny", "", "genq@host")
observer = WorkerMetrics("cpu").observer(info)
observer.started(info, 0)
observer.tokens(int(sys.argv[1]))
print("running", flush=True)
sys.stdin.read()  # runs its job until told to exit: its end is never observed
"""


def pool_process(path: Path, tokens: int) -> subprocess.Popen[str]:
    """A process writing metric files into `path` as a pool process does, mid-job."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path), "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(POOL_PROCESS), str(tokens)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "running\n"
    return proc


def pool_values(path: Path) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in PoolCollector(path).collect()
        for sample in family.samples
        if sample.name in {"genq_tokens_generated_total", "genq_active_jobs"}
    }


def test_pool_figures_are_summed_and_a_dead_process_is_no_longer_active(tmp_path: Path) -> None:
    first, second = pool_process(tmp_path, 5), pool_process(tmp_path, 7)
    try:
        assert pool_values(tmp_path) == {
            "genq_tokens_generated_total": 12,
            "genq_active_jobs": 2,
        }
        first.kill()  # died mid-job, as a pool process killed by the OOM killer
        first.wait()
        assert pool_values(tmp_path) == {
            "genq_tokens_generated_total": 12,  # what it generated still happened
            "genq_active_jobs": 1,
        }
        assert forget_dead(tmp_path) == []  # its gauge files went at the scrape
        assert {f.name for f in tmp_path.glob("gauge_*")} == {f"gauge_livesum_{second.pid}.db"}
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait()
            assert proc.stdout is not None and proc.stdin is not None
            proc.stdout.close()
            proc.stdin.close()


def test_endpoint_serves_the_registry(registry: CollectorRegistry) -> None:
    WorkerMetrics("gpu", registry).prime(["tiny"])
    endpoint = serve(registry, "127.0.0.1", free_port(), "GENQ_METRICS_PORT")
    assert endpoint is not None
    try:
        with urllib.request.urlopen(endpoint.url, timeout=5) as reply:
            text = reply.read().decode()
    finally:
        endpoint.stop()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"genq_tokens_generated", "genq_active_jobs", "genq_jobs"} <= names


def test_a_port_in_use_is_a_warning_naming_the_setting(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="genq.workers.publishing.metrics"):
            assert serve(registry, "127.0.0.1", port, "GENQ_METRICS_PORT") is None
    assert [r.getMessage() for r in caplog.records if "GENQ_METRICS_PORT" in r.getMessage()]
