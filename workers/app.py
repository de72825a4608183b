"""The Celery app: `celery -A genq.workers.app worker` (or `genq worker`) runs it.

Settings are read once, when Celery first reads the app's configuration (not at import): the
plan `genq worker` or `genq flower` handed over in GENQ_PLAN, else the GENQ_* variables
(genq.common.handover). A worker serves the models of its settings (`GENQ_DEVICE`,
`GENQ_WORKER_MODELS`; see genq.common.routing): at start it checks that it can, and consumes their
queues; once ready it records itself in Redis (workers.celery.heartbeat) and serves its
Prometheus metrics on GENQ_METRICS_PORT (genq.workers.publishing.metrics).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from functools import cached_property
from typing import Any

from celery import Celery, signals
from celery.utils.log import get_multiprocessing_logger

from genq.common.celery_config import celery_config
from genq.common.connection import connect
from genq.common.errors import RegistryError
from genq.common.handover import settings_from_environment
from genq.common.host import Host, this_host
from genq.common.logs import configure, fields, use_formatter
from genq.common.registry import ModelRegistry
from genq.common.routing import Serving, serving, worker_slots
from genq.common.schemas import WorkerInfo
from genq.common.settings import Settings
from genq.common.store.keys import Keys
from genq.workers.celery import handoff
from genq.workers.celery.admission import Admission, QueueGate
from genq.workers.celery.heartbeat import Heartbeat
from genq.workers.publishing.metrics import Endpoint, MetricsDir, serve_pool

log = logging.getLogger(__name__)
EXIT_CONFIG = 2  # as `genq worker`: the worker cannot serve what it is asked to
RESUME_POLL_S = 0.1  # a worker with slots waits on its broker queues this long per BRPOP


def pool_config(settings: Settings) -> dict[str, Any]:
    """With slots, one process runs that many jobs at once, each in a thread of Celery's
    threads pool (the jobs of a local model share its engine; a model with fewer slots takes
    no more, workers.celery.admission), for `genq worker` and plain `celery -A genq.workers.app
    worker` alike. With one slot, Celery's default (prefork) pool as before."""
    try:
        slots = worker_slots(settings, ModelRegistry.from_settings(settings))
    except RegistryError:  # reported when the worker starts (_on_worker_init)
        slots = settings.slots
    if slots == 1:
        return {}
    transport = celery_config(settings)["broker_transport_options"]
    return {
        "worker_pool": "threads",
        "worker_concurrency": slots,
        # A model's queue that was paused while the model was full (workers.celery.admission) is
        # polled again once the BRPOP waiting on the other queues returns (kombu cannot cut
        # it short): within this many seconds, not the default 1.
        "broker_transport_options": {**transport, "polling_interval": RESUME_POLL_S},
    }


class GenqCelery(Celery):  # type: ignore[misc]
    """A Celery app that carries genq's settings to its tasks, and whose workers serve the
    models of those settings: `settings`, else this process's (read when first needed)."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__("genq", include=["genq.workers.celery.tasks"])
        if settings is not None:
            self.genq_settings = settings  # the cached property's value
        self.on_after_configure.connect(self._on_configure, weak=False)
        self.genq_serving: Serving | None = None  # set in a worker's main process at start
        self.genq_admission: Admission | None = (
            None  # and its free slots (genq.workers.celery.admission)
        )
        self.steps["consumer"].add(QueueGate)
        self._heartbeat: Heartbeat | None = None
        self._node = "unknown"  # the worker's node name, on every log line
        self._host: Host | None = None  # where it runs, found at start
        self._metrics_dir: MetricsDir | None = None
        self._metrics: Endpoint | None = None
        signals.celeryd_init.connect(self._on_worker_init)
        signals.after_setup_logger.connect(self._on_setup_logger)
        signals.after_setup_task_logger.connect(self._on_setup_logger)
        signals.worker_ready.connect(self._on_worker_ready)
        signals.worker_shutting_down.connect(self._on_shutting_down)
        signals.worker_shutdown.connect(self._on_worker_shutdown)

    @cached_property
    def genq_settings(self) -> Settings:
        """This process's settings (genq.common.handover), read once."""
        return settings_from_environment()

    def _on_configure(self, sender: Celery, **_: Any) -> None:
        """Celery has read its configuration, on first use: genq's settings over it."""
        if sender is self:
            self.conf.update(celery_config(self.genq_settings))
            self.conf.update(pool_config(self.genq_settings))

    def _on_worker_init(self, sender: str, instance: Any, **_: Any) -> None:
        """Before the worker sets up: check it can serve its models, and consume their queues
        (a `-Q` given to celery overrides this)."""
        if instance.app is not self:
            return
        settings = self.genq_settings
        self._node = sender
        # Until Celery sets up its handlers, what is logged (its superuser warning, a
        # registry error) is an event already; the banner is not one, so json drops it.
        configure(settings.log_format, {"worker": sender})
        if settings.log_format == "json":
            instance.quiet = True
        try:
            self.genq_serving = serving(settings, ModelRegistry.from_settings(settings))
        except RegistryError as exc:  # a signal handler's Exception would only be logged
            print(f"genq worker: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CONFIG) from None
        self.amqp.queues.select(self.genq_serving.queues)
        self.genq_admission = Admission(self.genq_serving.queue_slots)
        self._host = this_host(settings)
        # What this worker serves and where, in the configuration Celery's `conf` inspect
        # command returns: Flower's worker page (Config tab) and /api/workers show it.
        self.conf.update(
            genq_device=self.genq_serving.device,
            genq_models=list(self.genq_serving.models),
            genq_host=self._host.hostname,
            genq_address=self._host.address,
        )
        if settings.metrics_port:  # before the pool processes fork
            self._metrics_dir = MetricsDir.create()

    def _on_setup_logger(self, logger: logging.Logger, **_: Any) -> None:
        """Celery has set up its handlers (root and task loggers): render them as events.
        Python's warnings (Celery's superuser warning, say) become events too."""
        context = {"worker": self._node}
        use_formatter(logger, self.genq_settings.log_format, context)
        # Celery gives the pool's (billiard's) logger handlers of its own, and no signal.
        use_formatter(get_multiprocessing_logger(), self.genq_settings.log_format, context)
        logging.captureWarnings(True)

    def _on_worker_ready(self, sender: Any, **_: Any) -> None:
        """Consuming: record this worker in Redis, refreshed by its heartbeat."""
        if sender.app is not self or self.genq_serving is None:
            return
        info = self._worker_info(sender.hostname, self.genq_serving)
        handoff.serving(connect(self.genq_settings), Keys(self.genq_settings.key_prefix), info.name)
        self._heartbeat = Heartbeat(self.genq_settings, info)
        self._heartbeat.start()
        log.info(
            "worker serving",
            extra=fields(models=info.models, device=info.device, queues=info.queues),
        )
        if self._metrics_dir is not None:
            self._serve_metrics(self._metrics_dir, self.genq_serving)

    def _serve_metrics(self, directory: MetricsDir, served: Serving) -> None:
        settings = self.genq_settings
        self._metrics = serve_pool(
            directory.path,
            settings.metrics_host,
            settings.metrics_port,
            served.device,
            served.models,
        )
        if self._metrics is not None:
            log.info("metrics endpoint", extra=fields(url=self._metrics.url))

    def _worker_info(self, name: str, served: Serving) -> WorkerInfo:
        queues = sorted(self.amqp.queues.consume_from)  # as consumed, -Q included
        if set(queues) != set(served.queues):
            log.warning(
                "this worker consumes %s (-Q) but serves %s: use GENQ_WORKER_MODELS and "
                "GENQ_DEVICE (genq worker --models, --device) instead of -Q",
                queues,
                served.queues,
            )
        now_ms = time.time_ns() // 10**6
        host = self._host or this_host(self.genq_settings)
        return WorkerInfo(
            name=name,
            device=served.device,
            models=list(served.models),
            queues=queues,
            slots={plan.model: plan.slots for plan in served.plans},
            pid=os.getpid(),
            started_ms=now_ms,
            heartbeat_ms=now_ms,
            heartbeat_interval_s=self.genq_settings.heartbeat_interval_s,
            hostname=host.hostname,
            address=host.address,
        )

    def _on_shutting_down(self, sender: str, sig: str, how: str, **_: Any) -> None:
        """A warm shutdown (SIGTERM): Celery stops taking jobs and waits for the running
        ones, which hand themselves off at their next chunk (workers.celery.handoff). A cold one
        (SIGQUIT) leaves them to the lease reaper."""
        if how != "Warm" or self._heartbeat is None:
            return
        log.info("worker shutting down: handing its running jobs off", extra=fields(signal=sig))
        settings = self.genq_settings
        handoff.start_draining(connect(settings), Keys(settings.key_prefix), sender)

    def _on_worker_shutdown(self, sender: Any, **_: Any) -> None:
        """A clean shutdown: the worker is gone at once, not when its record expires."""
        if sender.app is not self:
            return
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        if self._metrics_dir is not None:
            self._metrics_dir.remove()
            self._metrics_dir = None


app = GenqCelery()
