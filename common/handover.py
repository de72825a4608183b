"""How one genq process hands its settings to another it starts: one JSON value in one
environment variable, GENQ_PLAN.

`genq worker`, `genq relay`, `genq flower` and `genq serve` resolve their settings once (the
GENQ_* variables, then their command-line options over them) and start the long-running
process with `child_environment(settings)`: the parent's environment as it is, plus GENQ_PLAN
holding a `ProcessPlan` (the whole settings object, every field, versioned). The CLI writes no
other GENQ_* variable. The process started reads it with `settings_from_environment()`,
validated by pydantic: the settings of the plan alone, whatever other GENQ_* variables it
inherited. Without GENQ_PLAN (plain `celery -A genq.workers.app worker`, `python -m
genq.workers.relay`), it reads the GENQ_* variables itself, as any genq process does.

Each process then resolves what it runs from these settings with the one rule for each value:
a worker its models' serving plans (slots, context, threads: genq.common.plan and
genq.common.routing), the relay and the gateway the settings as they are.

Secrets (a Redis URL with a password, the gateway's API keys) travel in GENQ_PLAN in the
clear, as they would in GENQ_REDIS_URL or GENQ_API_KEYS: an environment variable, readable by
the process's own user (and root) in /proc/PID/environ, never in `ps` output as an argument
would be. Nothing logs it.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from genq.common.settings import REVEAL_SECRETS, Settings

PLAN_ENV = "GENQ_PLAN"


class PlannedSettings(Settings):
    """Settings from a plan alone: no field is read from the environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


class ProcessPlan(BaseModel):
    """What a genq process runs with, as the process that started it resolved it."""

    # hide_input_in_errors: a rejected plan would otherwise be echoed with its secrets.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    v: Literal[1] = 1
    settings: PlannedSettings

    @classmethod
    def of(cls, settings: Settings) -> ProcessPlan:
        return cls(settings=PlannedSettings(**dict(settings)))

    def to_json(self) -> str:
        """The plan as one JSON value, secrets included (for GENQ_PLAN only)."""
        return self.model_dump_json(context={REVEAL_SECRETS: True})


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment of a process this one starts: its own, plus GENQ_PLAN."""
    return {**os.environ, PLAN_ENV: ProcessPlan.of(settings).to_json()}


def settings_from_environment() -> Settings:
    """This process's settings, read once at its start: GENQ_PLAN's when its starter handed
    them over, else the GENQ_* variables. ValidationError for a bad plan or variable."""
    handed = os.environ.get(PLAN_ENV)
    if handed is None:
        return Settings()
    return ProcessPlan.model_validate_json(handed).settings
