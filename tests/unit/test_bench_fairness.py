"""The fairness section's measures compute what the README says they report: service spread
over a job's run, backlogged intervals, per-window service, Jain's index and the largest
weighted service difference over intervals in which both tenants are backlogged."""

from __future__ import annotations

import pytest

from genq.common.schemas import ChatMessage, JobSpec
from genq.common.store import fair
from ops.bench.fairness import (
    Span,
    backlog,
    backlogged,
    jain,
    max_difference,
    overlap,
    reserved,
    served,
    windows,
)


def span(tenant: str, submitted: float, started: float, finished: float, cost: float) -> Span:
    return Span(tenant, submitted, started, finished, cost)


def test_service_is_spread_evenly_over_each_run() -> None:
    jobs = [span("a", 0, 0, 10, 100), span("a", 0, 5, 5, 30)]  # the second took no time
    assert served(jobs, [0, 2.5, 5, 10, 20]) == pytest.approx([0, 25, 80, 130, 130])


def test_windows_split_service_at_their_edges() -> None:
    jobs = [span("a", 0, 5, 15, 100), span("a", 0, 20, 25, 50)]
    assert windows(jobs, end=25, width=10) == pytest.approx([50, 50, 50])


def test_backlog_merges_waiting_intervals_and_skips_jobs_that_never_waited() -> None:
    jobs = [span("a", 0, 4, 9, 1), span("a", 3, 6, 9, 1), span("a", 8, 8, 9, 1)]
    jobs.append(span("a", 10, 12, 13, 1))
    assert backlog(jobs) == [(0, 6), (10, 12)]
    assert overlap([(0, 6), (10, 12)], [(5, 11)]) == [(5, 6), (10, 11)]
    assert backlogged([(0, 6), (10, 20)], 10, 20)
    assert backlogged([(0, 3), (8, 20)], 0, 10)  # 3 s, then 2 s: half
    assert not backlogged([(0, 6), (12, 20)], 5, 15)  # 1 s, then 3 s


def test_jain_is_one_for_equal_shares_and_one_over_n_for_one_taker() -> None:
    assert jain([3, 3, 3]) == pytest.approx(1)
    assert jain([9, 0, 0]) == pytest.approx(1 / 3)
    assert jain([1, 3]) == pytest.approx(16 / 20)


def test_difference_is_weighted_and_counted_only_while_both_wait() -> None:
    # a (weight 1) is served alone from 0 to 10 while b (weight 2) waits from 0 to 10; b is
    # then served alone from 10 to 20 while nobody waits: only the first interval counts.
    a = [span("a", 0, 0, 10, 100), span("a", 0, 10, 20, 0)]  # the second keeps a waiting
    b = [span("b", 0, 10, 20, 400)]
    gap, pair = max_difference({"a": a, "b": b}, {"a": 1, "b": 2})
    assert gap == pytest.approx(100)
    assert pair == "a/b"


def test_difference_is_the_largest_change_within_an_interval() -> None:
    # both wait throughout; a leads by 40 at t=4, then b catches up and leads by 20 at t=10:
    # the largest change of a - b over a sub-interval is 40 - (-20) = 60
    a = [span("a", 0, 0, 4, 40), span("a", 0, 20, 20, 0)]
    b = [span("b", 0, 4, 10, 60), span("b", 0, 20, 20, 0)]
    gap, pair = max_difference({"a": a, "b": b}, {"a": 1, "b": 1})
    assert gap == pytest.approx(60)
    assert pair == "a/b"


@pytest.mark.parametrize(
    "spec",
    [
        JobSpec(prompt="Hi", max_tokens=1),
        JobSpec(prompt="héllo wörld, fair share", max_tokens=256),
        JobSpec(messages=[ChatMessage(role="user", content="a question?")], max_tokens=16),
    ],
)
def test_the_reservation_is_the_one_the_claim_charges(spec: JobSpec) -> None:
    # genq's bound 2(R + ND) is reported from it: it must be the scheduler's own figure.
    assert reserved(spec) == fair.reservation(spec)
