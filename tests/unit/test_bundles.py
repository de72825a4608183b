"""genq.producer.bundles: which jobs of a batch share a task message, and what that message is."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from genq.common.celery_config import BUNDLE_TASK, GENERATE_TASK
from genq.common.dispatch import Dispatch
from genq.common.schemas import BundleRequest, GenerateRequest, JobRecord, JobSpec, JobState
from genq.producer.bundles import MIN_MESSAGES, bundles, dispatches
from genq.producer.core import PreparedJob


def job(n: int, max_tokens: int = 16, priority: int = 5, model: str = "tiny") -> PreparedJob:
    record = JobRecord(
        spec=JobSpec(prompt=f"p{n}", model=model, max_tokens=max_tokens),
        state=JobState.QUEUED,
        queue="cpu.tiny",
        priority=priority,
        submitted_ms=1,
        batch_id="batch_1",
    )
    return PreparedJob(f"{n:032x}", record)


def sizes(groups: list[list[PreparedJob]]) -> list[int]:
    return [len(group) for group in groups]


def test_short_jobs_are_grouped_up_to_the_job_limit_in_order() -> None:
    jobs = [job(n) for n in range(100 * MIN_MESSAGES)]
    groups = list(bundles(jobs, tokens=10_000, most=32))
    assert sizes(groups) == [32] * (len(jobs) // 32)
    assert [j for group in groups for j in group] == jobs


def test_a_group_stops_where_the_token_budget_would_be_exceeded() -> None:
    jobs = [job(n, max_tokens=100) for n in range(50 * MIN_MESSAGES)]
    groups = list(bundles(jobs, tokens=512, most=32))
    assert set(sizes(groups)) == {5}


def test_a_job_asking_for_more_than_the_budget_goes_alone() -> None:
    jobs = [job(0), job(1), job(2, max_tokens=4096), job(3), job(4)]
    groups = list(bundles(jobs * MIN_MESSAGES, tokens=512, most=32))
    assert all(len(group) == 1 for group in groups if group[0].record.spec.max_tokens == 4096)
    assert max(sizes(groups)) > 1


def test_a_small_chunk_is_spread_over_many_messages() -> None:
    jobs = [job(n) for n in range(40)]
    groups = list(bundles(jobs, tokens=10_000, most=32))
    assert len(groups) >= MIN_MESSAGES
    assert max(sizes(groups)) == 2


def test_fewer_jobs_than_messages_go_one_per_message() -> None:
    groups = list(bundles([job(n) for n in range(5)], tokens=10_000, most=32))
    assert sizes(groups) == [1] * 5


@pytest.mark.parametrize(
    ("other", "reason"), [({"priority": 9}, "priority"), ({"model": "tiny-chat"}, "model")]
)
def test_jobs_with_another_priority_or_model_start_another_group(
    other: dict[str, object], reason: str
) -> None:
    jobs = [job(0), job(1), job(2, **other), job(3)]  # type: ignore[arg-type]
    groups = list(bundles(jobs * 10, tokens=10_000, most=32))
    for group in groups:
        assert len({(j.record.priority, j.record.spec.model) for j in group}) == 1, reason


def test_a_group_of_one_is_a_plain_job_message_and_larger_ones_a_bundle() -> None:
    jobs = [job(n) for n in range(3 * MIN_MESSAGES)] + [job(99, max_tokens=4096)]
    sent = list(dispatches(jobs, tokens=512, most=32))
    assert sent[-1].task == GENERATE_TASK
    assert isinstance(sent[-1].request, GenerateRequest)
    bundled = [d for d in sent if d.task == BUNDLE_TASK]
    assert bundled
    first = bundled[0].request
    assert isinstance(first, BundleRequest)
    assert [r.job_id for r in first.jobs] == [j.job_id for j in jobs[: len(first.jobs)]]


def test_a_bundle_argsrepr_counts_its_jobs_and_never_shows_a_prompt() -> None:
    jobs = [job(n) for n in range(3)]
    request = BundleRequest(jobs=[j.request for j in jobs])
    shown = Dispatch(request, queue="cpu.tiny", priority=5, model="tiny").argsrepr
    assert shown == f"jobs=3 first={jobs[0].job_id} epoch=0 model=tiny batch=batch_1"
    assert "p0" not in shown


def test_a_bundle_holds_jobs_of_one_batch_only() -> None:
    with pytest.raises(ValidationError, match="one batch"):
        BundleRequest(
            jobs=[
                GenerateRequest(job_id="a" * 32, batch_id="b1"),
                GenerateRequest(job_id="b" * 32, batch_id="b2"),
            ]
        )


def test_a_bundle_is_never_empty() -> None:
    with pytest.raises(ValidationError):
        BundleRequest(jobs=[])


def test_a_bundle_task_id_names_its_first_job_and_how_many_follow() -> None:
    jobs = [GenerateRequest(job_id=f"{n:032x}", batch_id="b") for n in range(4)]
    assert BundleRequest(jobs=jobs).task_id == f"{jobs[0].job_id}-0+3"
