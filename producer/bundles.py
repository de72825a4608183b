"""Bundling a batch's short jobs: several to a task message, so that the broker's cost per
message (a fetch, an ack, task events: several milliseconds of worker time) is not paid per
job when the jobs themselves take a few milliseconds.

Consecutive jobs bound for the same queue, priority and model are grouped while their
`max_tokens` add up to at most `Settings.bundle_tokens`, `Settings.bundle_jobs` at most; a
job asking for more goes alone. A small chunk of jobs is spread over at least
`MIN_MESSAGES` messages, so that a small batch is still shared by many workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from genq.common.dispatch import Dispatch
from genq.common.schemas import BundleRequest
from genq.producer.core import PreparedJob

MIN_MESSAGES = 16


def bundles(jobs: Sequence[PreparedJob], tokens: int, most: int) -> Iterator[list[PreparedJob]]:
    """The jobs in order, in groups of one or more."""
    size = min(most, max(1, len(jobs) // MIN_MESSAGES))
    group: list[PreparedJob] = []
    used = 0
    for job in jobs:
        cost = job.record.spec.max_tokens
        if group and (
            len(group) >= size or used + cost > tokens or _route(job) != _route(group[0])
        ):
            yield group
            group, used = [], 0
        group.append(job)
        used += cost
    if group:
        yield group


def dispatches(jobs: Sequence[PreparedJob], tokens: int, most: int) -> Iterator[Dispatch]:
    """One task message per group: a plain job message for a group of one."""
    for group in bundles(jobs, tokens, most):
        queue, priority, model = _route(group[0])
        tenant = group[0].record.tenant  # a batch's jobs are its tenant's
        request = (
            group[0].request
            if len(group) == 1
            else BundleRequest(jobs=[job.request for job in group])
        )
        yield Dispatch(request, queue, priority, model, tenant)


def _route(job: PreparedJob) -> tuple[str, int, str]:
    record = job.record
    return record.queue, record.priority, record.spec.model
