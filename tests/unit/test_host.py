"""genq.common.host: the address a process reaches Redis from, by the URL it is given."""

from __future__ import annotations

import pytest

from genq.common.host import Host, source_address
from genq.common.schemas import WorkerInfo


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://:secret@localhost/0",  # no port: Redis's
        "redis+sentinel://127.0.0.1:26379,192.0.2.1:26379/mymaster/0",  # the first Sentinel
    ],
)
def test_redis_on_loopback_is_reached_from_loopback(url: str) -> None:
    assert source_address(url) == "127.0.0.1"


@pytest.mark.parametrize(
    "url", ["unix:///run/redis/redis.sock?db=0", "redis://no-such-host.invalid:6379/0"]
)
def test_a_unix_socket_or_an_unresolved_host_gives_no_address(url: str) -> None:
    assert source_address(url) is None


def test_a_host_shows_its_address_beside_its_name() -> None:
    assert str(Host("box", "198.18.10.4")) == "box (198.18.10.4)"
    assert str(Host("box", None)) == "box"


def test_a_worker_record_from_before_hosts_still_reads() -> None:
    older = (
        '{"v": 1, "name": "genq@box", "device": "cpu", "models": ["tiny"], "queues": '
        '["cpu.tiny"], "pid": 7, "started_ms": 1, "heartbeat_ms": 2, "heartbeat_interval_s": 5}'
    )
    info = WorkerInfo.model_validate_json(older)
    assert (info.hostname, info.address) == ("", None)
