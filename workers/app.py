"""The Celery app: `celery -A workers.app worker` (or `genq worker`) runs it.

Settings are read once, here, from GENQ_* environment variables.
"""

from __future__ import annotations

from celery import Celery

from common.celery_config import celery_config
from common.settings import Settings


class GenqCelery(Celery):  # type: ignore[misc]
    """A Celery app that carries genq's settings to its tasks."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("genq", include=["workers.tasks"])
        self.genq_settings = settings
        self.conf.update(celery_config(settings))


app = GenqCelery(Settings())
