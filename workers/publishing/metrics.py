"""A worker's Prometheus metrics: what its jobs did, by model and device class.

Pool processes update them through a job observer (observe.py), each into its own files
(prometheus_client's multiprocess mode) in a private directory of the worker (MetricsDir); the
main process serves their sum on GENQ_METRICS_PORT. Labels are bounded: models of the
registry, device classes, outcomes, tenants (the keys file's); never job or batch ids.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from genq.common.adapters.prometheus_values import pick_value_class
from genq.workers.publishing.observe import AttemptInfo, JobObserver

log = logging.getLogger(__name__)

OUTCOMES = ("succeeded", "cancelled", "failed", "superseded", "abandoned")  # JobObserver.ended's
FIRST_TOKEN_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
STOP_WAIT_S = 5.0
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LABELS = ("model", "device")
_TENANT_LABELS = (*_LABELS, "tenant")
QUEUE_WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class MetricsDir:
    """A fresh directory for the metric files of one worker's processes; removed when the
    worker stops. One left behind by a worker that could not remove it (killed by SIGKILL or
    the OOM killer) is removed by the next worker started on the machine."""

    PREFIX = "genq-metrics-"
    OWNER = "owner"  # host and pid of the worker's main process: is it gone?

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls) -> MetricsDir:
        """A new directory, set as PROMETHEUS_MULTIPROC_DIR for this process and the pool
        processes it forks (so before they fork). One inherited from the environment is not
        reused: files of an earlier worker would count as this one's."""
        remove_orphans(Path(tempfile.gettempdir()))
        path = Path(tempfile.mkdtemp(prefix=cls.PREFIX))
        (path / cls.OWNER).write_text(f"{socket.gethostname()} {os.getpid()}")
        os.environ[MULTIPROC_ENV] = str(path)
        # prometheus_client picks file-backed values if the variable is set when it is first
        # imported, and Celery's command line has imported it before any genq code runs
        # (Flower's `celery flower` plugin does): have it pick again, as at import
        # (genq.common.adapters.prometheus_values).
        pick_value_class()
        return cls(path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if os.environ.get(MULTIPROC_ENV) == str(self.path):
            del os.environ[MULTIPROC_ENV]


def remove_orphans(parent: Path) -> list[Path]:
    """Remove the metrics directories under `parent` whose worker is gone; returns them. One
    without an owner file, another host's (a /tmp shared between containers, whose process
    ids are not ours to check) or another user's is left alone."""
    here = socket.gethostname()
    removed = []
    for path in parent.glob(f"{MetricsDir.PREFIX}*"):
        try:
            host, _, pid = (path / MetricsDir.OWNER).read_text().rpartition(" ")
            owner = int(pid)
        except (OSError, ValueError):
            continue
        if host == here and not alive(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@dataclass
class _Series:
    """One model's metrics, bound to their labels once: an update per token chunk is then a
    single increment (a few microseconds in multiprocess mode)."""

    tokens: Counter
    first_token: Histogram
    active: Gauge
    windows: Counter
    resumes: Counter
    by_outcome: dict[str, tuple[Counter, Histogram]] = field(default_factory=dict)


class WorkerMetrics:
    """The metrics of one worker process, and the observer factory that feeds them
    (`observer`, for WorkerContext.observers). `registry`: where to register them; None (as
    in a worker, whose main process serves every pool process's files) registers nowhere."""

    def __init__(self, device: str, registry: CollectorRegistry | None = None) -> None:
        self.device = device
        self._tokens = Counter(
            "genq_tokens_generated",
            "Tokens generated (completion tokens, counted as each chunk is published).",
            _LABELS,
            registry=registry,
        )
        self._first_token = Histogram(
            "genq_first_token_seconds",
            "Seconds from the start of a job attempt on this worker (claimed, before its "
            "model is loaded) to its first token chunk; queue wait not included.",
            _LABELS,
            buckets=FIRST_TOKEN_BUCKETS_S,
            registry=registry,
        )
        self._duration = Histogram(
            "genq_job_duration_seconds",
            "Seconds a job attempt ran on this worker, from its start to its end, by outcome.",
            (*_LABELS, "outcome"),
            buckets=DURATION_BUCKETS_S,
            registry=registry,
        )
        self._active = Gauge(
            "genq_active_jobs",
            "Job attempts running now.",
            _LABELS,
            multiprocess_mode="livesum",
            registry=registry,
        )
        self._windows = Counter(
            "genq_windows_completed",
            "Continuation windows completed.",
            _LABELS,
            registry=registry,
        )
        self._jobs = Counter(
            "genq_jobs",
            "Job attempts ended, by outcome: succeeded, cancelled, failed, superseded (a "
            "newer attempt took the job over) or abandoned (Redis was lost under it).",
            (*_LABELS, "outcome"),
            registry=registry,
        )
        self._resumes = Counter(
            "genq_resumes",
            "Job attempts that resumed a job from its checkpoint after an earlier attempt "
            "was lost (epoch > 0).",
            _LABELS,
            registry=registry,
        )
        self._tenant_tokens = Counter(
            "genq_tenant_tokens",
            "Tokens generated for each tenant (its fair share's service: README, Fair share).",
            _TENANT_LABELS,
            registry=registry,
        )
        self._queue_wait = Histogram(
            "genq_tenant_queue_wait_seconds",
            "Seconds a tenant's jobs waited from submit to their first claim.",
            _TENANT_LABELS,
            buckets=QUEUE_WAIT_BUCKETS_S,
            registry=registry,
        )
        self._series: dict[str, _Series] = {}
        self._tenants: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observer(self, info: AttemptInfo) -> JobObserver:
        return MetricsObserver(self, info.model, self.tenant(info.model, info.tenant))

    def tenant(self, model: str, tenant: str) -> tuple[Counter, Histogram]:
        """A tenant's tokens counter and queue wait histogram for `model`."""
        found = self._tenants.get((model, tenant))
        if found is None:
            labels = (model, self.device, tenant)
            found = self._tenants[model, tenant] = (
                self._tenant_tokens.labels(*labels),
                self._queue_wait.labels(*labels),
            )
        return found

    def series(self, model: str) -> _Series:
        found = self._series.get(model)
        if found is None:
            labels = (model, self.device)
            found = self._series[model] = _Series(
                self._tokens.labels(*labels),
                self._first_token.labels(*labels),
                self._active.labels(*labels),
                self._windows.labels(*labels),
                self._resumes.labels(*labels),
            )
        return found

    def ended(self, series: _Series, model: str, outcome: str) -> tuple[Counter, Histogram]:
        """The outcome's counter and duration histogram of `series`."""
        found = series.by_outcome.get(outcome)
        if found is None:
            labels = (model, self.device, outcome)
            found = series.by_outcome[outcome] = (
                self._jobs.labels(*labels),
                self._duration.labels(*labels),
            )
        return found

    def prime(self, models: Iterable[str]) -> None:
        """Every series of these models, at zero: present from the first scrape, so that
        Prometheus sees the first job's increase too."""
        for model in models:
            series = self.series(model)
            for outcome in OUTCOMES:
                self.ended(series, model, outcome)


class MetricsObserver(JobObserver):
    """One attempt, measured from when it was created (as the attempt starts)."""

    def __init__(
        self, metrics: WorkerMetrics, model: str, tenant: tuple[Counter, Histogram]
    ) -> None:
        self._metrics = metrics
        self._model = model
        self._series = metrics.series(model)
        self._tenant_tokens, self._queue_wait = tenant
        self._start_s = time.time()
        self._running = False  # an attempt that fails before it starts was never active

    def started(self, info: AttemptInfo, from_window: int) -> None:
        self._series.active.inc()
        self._running = True
        if info.epoch > 0:
            self._series.resumes.inc()
        else:
            self._queue_wait.observe(info.queue_wait_s)

    def tokens(self, count: int) -> None:
        self._series.tokens.inc(count)
        self._tenant_tokens.inc(count)

    def window_ended(self, window: int, tokens_total: int) -> None:
        self._series.windows.inc()

    def ended(self, outcome: str, first_token_ms: int | None) -> None:
        now_s = time.time()
        if self._running:
            self._series.active.dec()
            self._running = False
        jobs, duration = self._metrics.ended(self._series, self._model, str(outcome))
        jobs.inc()
        duration.observe(now_s - self._start_s)
        if first_token_ms is not None:
            self._series.first_token.observe(max(first_token_ms / 1000 - self._start_s, 0.0))


class PoolCollector(Collector):
    """The sum of every pool process's metric files. A live gauge's files of a process that
    has exited (replaced by Celery, or killed mid-job) are removed first: its running jobs
    are not running any more. Its counters and histograms stay: they happened."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._files = MultiProcessCollector(None, path=str(path))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        forget_dead(self._path)
        metrics: Iterable[Metric] = self._files.collect()  # type: ignore[no-untyped-call]
        return metrics


def forget_dead(path: Path) -> list[int]:
    """Remove the live-gauge files of processes that are gone; their pids."""
    dead = []
    for file in path.glob("gauge_live*_*.db"):
        pid = int(file.stem.rpartition("_")[2])
        if not alive(pid):
            mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
            dead.append(pid)
    return dead


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


@dataclass
class Endpoint:
    """A running /metrics endpoint (a daemon thread)."""

    server: WSGIServer
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(STOP_WAIT_S)


def serve(registry: CollectorRegistry, host: str, port: int, variable: str) -> Endpoint | None:
    """Serve `registry` on http://host:port/metrics. A port already in use is logged (naming
    the setting, `variable`) and leaves the process running without an endpoint."""
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as exc:
        log.warning(
            "metrics: cannot listen on %s port %d (%s): no metrics endpoint; set %s to a free "
            "port (0: none)",
            host,
            port,
            exc.strerror or exc,
            variable,
        )
        return None
    shown = f"[{host}]" if ":" in host else host
    return Endpoint(server, thread, f"http://{shown}:{port}/metrics")


def serve_pool(
    path: Path, host: str, port: int, device: str, models: Sequence[str]
) -> Endpoint | None:
    """A worker main process's endpoint: every pool process's metrics, the served models'
    series present from the start."""
    WorkerMetrics(device).prime(models)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PoolCollector(path))
    return serve(registry, host, port, "GENQ_METRICS_PORT")
