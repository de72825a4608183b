"""genq.common.handover: a process's settings handed to the process it starts as one JSON
value in GENQ_PLAN, read back whole; without it, the GENQ_* variables."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from genq.common.handover import PLAN_ENV, ProcessPlan, settings_from_environment
from genq.common.settings import Settings
from genq.workers.app import GenqCelery

PASSWORD = "s3cret-pw"


def handed(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv(PLAN_ENV, ProcessPlan.of(settings).to_json())


def test_a_plan_round_trips_every_setting_secrets_included(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        redis_url=f"redis://:{PASSWORD}@cache.internal:6380/2",
        api_keys="k1,k2",
        worker_models="tiny,other",
        slots=3,
        device="gpu",
    )
    handed(monkeypatch, settings)
    read = settings_from_environment()
    assert dict(read) == dict(settings)
    assert {key.tenant for key in read.api_key_table().keys} == {"default"}
    assert read.api_key_table().match("k2") is not None


def test_a_handed_plan_wins_over_every_genq_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_SLOTS", "7")
    monkeypatch.setenv("GENQ_KEY_PREFIX", "from-variable")
    handed(monkeypatch, Settings(slots=3))
    read = settings_from_environment()
    assert (read.slots, read.key_prefix) == (3, "from-variable")  # resolved when handed over
    monkeypatch.setenv(PLAN_ENV, json.dumps({"v": 1, "settings": {"slots": 2}}))
    assert (settings_from_environment().slots, settings_from_environment().key_prefix) == (
        2,
        "genq",  # a field the plan lacks is its default, not read from GENQ_KEY_PREFIX
    )


def test_without_a_plan_the_genq_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PLAN_ENV, raising=False)
    monkeypatch.setenv("GENQ_SLOTS", "5")
    assert settings_from_environment().slots == 5


@pytest.mark.parametrize(
    "plan",
    [
        {"v": 2, "settings": {}},
        {"v": 1, "settings": {"slots": 0}},
        {"v": 1, "settings": {}, "extra": 1},
        {"v": 1, "settings": {"redis_url": f"http://:{PASSWORD}@host"}},
    ],
)
def test_a_bad_plan_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, plan: dict[str, object]
) -> None:
    monkeypatch.setenv(PLAN_ENV, json.dumps(plan))
    with pytest.raises(ValidationError) as caught:
        settings_from_environment()
    assert PASSWORD not in str(caught.value)


def test_api_keys_are_masked_in_any_other_json() -> None:
    dumped = Settings(api_keys="k1").model_dump_json()
    assert "k1" not in dumped
    assert json.loads(dumped)["api_keys"] == ["**********"]


def test_options_over_settings_are_validated_as_variables_are() -> None:
    settings = Settings(slots=2).with_options(worker_models=" b, a,,b ", device="gpu")
    assert (settings.worker_models, settings.device, settings.slots) == (("b", "a"), "gpu", 2)
    with pytest.raises(ValidationError):
        settings.with_options(slots=0)


def test_the_celery_app_reads_its_plan_when_first_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENQ_SLOTS", "2")
    app = GenqCelery()  # as `celery -A genq.workers.app` imports it: nothing read yet
    handed(monkeypatch, Settings(slots=4))
    assert (app.conf.worker_pool, app.conf.worker_concurrency) == ("threads", 4)
    assert app.genq_settings.slots == 4
