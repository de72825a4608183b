"""The gateway's count of requests following a job (producer/gateway/followers.py): admitted
up to the limit, refused with OpenAI's 429 past it, each counted out once; and the open-files
limit raised to what the limit needs."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from genq.producer.gateway.errors import ApiError
from genq.producer.gateway.followers import FD_MARGIN, FDS_PER_FOLLOWER, Followers, raise_fd_limit


def test_past_the_limit_a_follower_is_refused_with_a_429() -> None:
    followers = Followers(2)
    followers.admit(), followers.admit()
    with pytest.raises(ApiError) as refused:
        followers.admit()
    assert (refused.value.status, refused.value.code) == (429, "too_many_streams")
    assert "GENQ_GATEWAY_MAX_STREAMS" in refused.value.message
    assert followers.count == 2


def test_a_release_counts_out_once_however_often_it_is_called() -> None:
    followers = Followers(2)
    release, _ = followers.admit(), followers.admit()
    release()
    release()
    assert followers.count == 1
    followers.admit()  # room for one again, and only one
    with pytest.raises(ApiError):
        followers.admit()


@pytest.fixture
def low_fd_limit() -> Iterator[int]:
    """This process's soft limit on open files lowered to 512; restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_open_files_limit_is_raised_to_what_the_streams_need(low_fd_limit: int) -> None:
    needed = 1000 * FDS_PER_FOLLOWER + FD_MARGIN
    if low_fd_limit != resource.RLIM_INFINITY and low_fd_limit < needed:
        pytest.skip(f"the hard limit on open files here is {low_fd_limit}, under {needed}")
    raise_fd_limit(1000)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == needed


def test_the_limit_stops_at_the_hard_limit_and_says_so(
    low_fd_limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    if low_fd_limit == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    raise_fd_limit(low_fd_limit)  # needs twice the hard limit and more
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == low_fd_limit
    assert "GENQ_GATEWAY_MAX_STREAMS" in caplog.text
