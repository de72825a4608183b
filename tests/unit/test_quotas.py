"""Admission (producer/quotas.py), without Redis: what a job costs, which limit refuses a
submit and what the refusal says, which bucket call a submit makes and when its tokens go back.
The bucket itself runs in Redis: tests/integration/test_quotas.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from genq.common.errors import InvalidJob, QueueFull, QuotaExceeded
from genq.common.registry import ModelRegistry
from genq.common.schemas import JobSpec
from genq.common.settings import Settings
from genq.common.store.quotas import TAKE, Take
from genq.common.tenants import TenantPolicy
from genq.producer.quotas import Admission, Charge, Standing, job_cost, model_queues


def admission(charge: Charge, tmp_path: Path, max_queued: int = 0) -> Admission:
    settings = Settings(cache_dir=tmp_path, max_queued=max_queued)
    return Admission(settings, model_queues(ModelRegistry.from_settings(settings)), charge)


def standing(waiting: int = 0, depth: int = 0, **policy: int) -> Standing:
    return Standing(TenantPolicy.model_validate(policy), waiting, depth)


JOB = Charge("acme", 1, 100, "cpu.tiny")
BATCH = Charge("acme", 40, 4000)


def test_a_job_costs_its_prompt_tokens_estimated_plus_its_max_tokens() -> None:
    assert job_cost(JobSpec(prompt="x" * 10, max_tokens=64)) == 3 + 64  # 10 chars: 3 tokens
    chat = JobSpec(messages=[{"role": "user", "content": "y" * 8}], max_tokens=1)
    assert job_cost(chat) == 2 + 1


def test_a_tenant_without_limits_reads_and_takes_nothing_more(tmp_path: Path) -> None:
    assert admission(JOB, tmp_path).check(standing(waiting=10**6)) is None


def test_the_read_is_one_pipeline_of_policy_waiting_jobs_and_depth(tmp_path: Path) -> None:
    """Over every model queue of the registry; the depth only under GENQ_MAX_QUEUED."""
    read = admission(JOB, tmp_path, max_queued=5).read
    assert [call[0] for call in read.calls][:2] == ["HGET", "ZCARD"]
    assert any(call == ("ZCARD", "genq:fair:cpu.tiny:acme") for call in read.calls)
    zcards = sum(call[0] == "ZCARD" for call in read.calls)
    llens = sum(call[0] == "LLEN" for call in read.calls)
    replies = ['{"max_queued": 3}', *[1] * zcards, *[2] * llens]
    assert read.reply(replies) == standing(waiting=zcards, depth=2 * llens, max_queued=3)
    assert not any(call[0] == "LLEN" for call in admission(JOB, tmp_path).read.calls)


def test_max_queued_refuses_the_job_past_it_naming_tenant_limit_and_count(
    tmp_path: Path,
) -> None:
    check = admission(JOB, tmp_path).check
    assert check(standing(waiting=2, max_queued=3)) is None
    with pytest.raises(QuotaExceeded, match=r"'acme': 3 jobs waiting.*max_queued \(3\)") as exc:
        check(standing(waiting=3, max_queued=3))
    assert exc.value.retryable and exc.value.retry_after_s > 0


def test_a_batch_counts_all_its_jobs_against_max_queued(tmp_path: Path) -> None:
    check = admission(BATCH, tmp_path).check
    assert check(standing(waiting=10, max_queued=50)) is None
    with pytest.raises(QuotaExceeded, match="this batch of 40 jobs would pass its max_queued"):
        check(standing(waiting=11, max_queued=50))


def test_what_could_never_pass_is_invalid_not_retryable(tmp_path: Path) -> None:
    """A job over a minute's tokens, a batch over max_queued: retrying cannot help."""
    with pytest.raises(InvalidJob, match=r"costs 100 tokens.*tokens_per_minute \(99\)"):
        admission(JOB, tmp_path).check(standing(tokens_per_minute=99))
    with pytest.raises(InvalidJob, match=r"more than its max_queued \(39\).*split it"):
        admission(BATCH, tmp_path).check(standing(max_queued=39))


def test_the_model_ceiling_holds_above_every_tenant(tmp_path: Path) -> None:
    """GENQ_MAX_QUEUED: per model queue, whoever's the jobs are; a batch is not held to it."""
    with pytest.raises(QueueFull, match="GENQ_MAX_QUEUED allows \\(4\\)"):
        admission(JOB, tmp_path, max_queued=4).check(standing(depth=4))
    assert admission(BATCH, tmp_path, max_queued=4).check(standing(depth=4)) is None


def test_a_token_rate_takes_the_cost_from_the_tenants_bucket(tmp_path: Path) -> None:
    take = admission(JOB, tmp_path).check(standing(tokens_per_minute=600))
    assert take is not None
    assert take.calls == (("EVAL", TAKE, 1, "genq:quota:acme", 600, 100),)


def test_a_refused_take_says_when_to_retry_and_gives_nothing_back(tmp_path: Path) -> None:
    entry = admission(JOB, tmp_path)
    entry.check(standing(tokens_per_minute=600))
    with pytest.raises(QuotaExceeded, match="holds 40 of its tokens_per_minute \\(600\\)") as exc:
        entry.took(Take(taken=False, held=40, wait_ms=6000))
    assert exc.value.retry_after_s == 6.0
    assert entry.refund() is None


def test_tokens_taken_go_back_in_full_or_in_part(tmp_path: Path) -> None:
    entry = admission(BATCH, tmp_path)
    entry.check(standing(tokens_per_minute=6000))
    entry.took(Take(taken=True, held=2000, wait_ms=0))
    whole, part = entry.refund(), entry.refund(1500)
    assert whole is not None and whole.calls[0][-2:] == (6000, -4000)
    assert part is not None and part.calls[0][-2:] == (6000, -1500)
    assert entry.refund(0) is None
