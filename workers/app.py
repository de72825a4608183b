"""The Celery app: `celery -A workers.app worker` (or `genq worker`) runs it.

Settings are read once, here, from GENQ_* environment variables. A worker serves the models of
its settings (`GENQ_DEVICE`, `GENQ_WORKER_MODELS`; see common.routing): at start it checks that
it can, and consumes their queues.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery, signals

from common.celery_config import celery_config
from common.errors import RegistryError
from common.registry import ModelRegistry
from common.routing import Serving, serving
from common.settings import Settings

EXIT_CONFIG = 2  # as `genq worker`: the worker cannot serve what it is asked to


class GenqCelery(Celery):  # type: ignore[misc]
    """A Celery app that carries genq's settings to its tasks, and whose workers serve the
    models of those settings."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("genq", include=["workers.tasks"])
        self.genq_settings = settings
        self.conf.update(celery_config(settings))
        self.genq_serving: Serving | None = None  # set in a worker's main process at start
        signals.celeryd_init.connect(self._on_worker_init)

    def _on_worker_init(self, instance: Any, **_: Any) -> None:
        """Before the worker sets up: check it can serve its models, and consume their queues
        (`-Q`, which `genq worker` computes the same way, overrides this)."""
        if instance.app is not self:
            return
        settings = self.genq_settings
        try:
            self.genq_serving = serving(settings, ModelRegistry.from_settings(settings))
        except RegistryError as exc:  # a signal handler's Exception would only be logged
            print(f"genq worker: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_CONFIG) from None
        self.amqp.queues.select(self.genq_serving.queues)


app = GenqCelery(Settings())
