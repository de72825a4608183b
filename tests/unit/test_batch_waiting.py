"""What the sync and async batch handles share without I/O: which jobs a results reader reads
after an announcement, when a wait gives up, and how a lost cancel race is counted."""

from __future__ import annotations

import pytest

from genq.common.errors import StreamTimeout
from genq.common.schemas import BatchStatus
from genq.producer.submitter import CancelReport
from genq.producer.waiting import Heard, ResultPage, Waiting

ENDED = ("succeeded", "c", '{"text": "t", "finish_reason": "length", "usage": null}', None, None)
RUNNING = ("running", "c", None, None, None)


def test_a_results_page_reads_every_pending_job_first() -> None:
    page = ResultPage(["a", "b", "c"])
    assert page.to_read() == ["a", "b", "c"]


def test_a_results_page_yields_the_ended_prefix_and_keeps_the_rest_pending() -> None:
    page = ResultPage(["a", "b", "c"])
    lines = page.take(["a", "b", "c"], [ENDED, RUNNING, ENDED])
    assert [line.job_id for line in lines] == ["a"]
    assert page.pending == ["b", "c"]


def test_after_an_announcement_only_the_announced_head_of_the_page_is_read() -> None:
    page = ResultPage(["a", "b", "c", "d"])
    page.hear({"a", "b", "d"})
    assert page.to_read() == ["a", "b"]


def test_an_announcement_of_a_later_job_reads_nothing_until_the_head_ends() -> None:
    page = ResultPage(["a", "b"])
    page.hear({"b"})
    assert page.to_read() == []


def test_a_quiet_wait_reads_the_whole_rest_again_in_case_an_ending_went_unheard() -> None:
    page = ResultPage(["a", "b"])
    page.hear({"b"})
    page.hear(set())
    assert page.to_read() == ["a", "b"]


def test_a_wait_ends_when_the_batch_is_complete_and_reports_each_status() -> None:
    seen: list[BatchStatus] = []
    waiting = Waiting("b", None, seen.append, poll_s=5.0)
    assert not waiting.over(BatchStatus(batch_id="b", total=2, succeeded=1))
    assert waiting.over(BatchStatus(batch_id="b", total=2, succeeded=1, failed=1))
    assert [s.ended for s in seen] == [1, 2]
    assert waiting.wait_s() == 5.0


def test_a_wait_past_its_timeout_raises_with_the_counts() -> None:
    waiting = Waiting("b", 0.0, None, poll_s=5.0)
    assert waiting.wait_s() == 0.0
    with pytest.raises(StreamTimeout, match="batch b: 1 of 3 jobs ended"):
        waiting.over(BatchStatus(batch_id="b", total=3, cancelled=1))


def test_a_queued_job_taken_by_a_worker_before_its_cancel_counts_as_signalled() -> None:
    report = CancelReport(not_started=3, signalled=1, already_ended=1)
    assert report.settled([1, 0, 1]) == CancelReport(2, 2, 1)
    assert report.settled([]) == report


def test_a_wait_takes_what_else_was_announced_without_waiting_after_the_first() -> None:
    heard = Heard(timeout_s=60)
    assert (heard.timeout() or 0) > 0  # the first announcement is waited for
    heard.take({"data": "a"})
    assert heard.timeout() == 0.0  # the rest: only what came meanwhile
    heard.take({"data": "b"})
    heard.take(None)
    assert heard.timeout() is None
    assert heard.job_ids == {"a", "b"}


def test_a_wait_that_hears_nothing_ends_empty_once_its_time_is_up() -> None:
    heard = Heard(timeout_s=0)
    assert heard.timeout() == 0.0
    heard.take(None)
    assert heard.timeout() is None
    assert heard.job_ids == set()
