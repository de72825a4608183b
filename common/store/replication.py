"""Redis replication as genq sees it: a server's role, the primary a Sentinel names, and
WAIT for replicas. These touch no genq key; common/connection.py uses them to check, before a
command queues anything, that GENQ_REDIS_URL leads to a primary, and a submit and the relay's
checkpoints wait for replicas with `wait` (GENQ_REDIS_WAIT_REPLICAS)."""

from __future__ import annotations

from typing import Any

from genq.common.store.command import Command

PRIMARY_ROLE = "master"  # ROLE's first element on a primary (Redis's own word)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _role(replies: list[Any]) -> str:
    return _text(replies[0][0])


def role() -> Command[str]:
    """The server's role: `master`, `slave` (a replica) or `sentinel`."""
    return Command((("ROLE",),), _role)


def _address(replies: list[Any]) -> tuple[str, int] | None:
    reply = replies[0]
    return None if reply is None else (_text(reply[0]), int(reply[1]))


def primary_address(name: str) -> Command[tuple[str, int] | None]:
    """Asked of a Sentinel: the address of the primary it monitors as `name`, None if it
    monitors none by that name."""
    return Command((("SENTINEL", "GET-MASTER-ADDR-BY-NAME", name),), _address)


def _count(replies: list[Any]) -> int:
    return int(replies[0])


def wait(replicas: int, timeout_ms: int) -> Command[int]:
    """WAIT: until `replicas` replicas hold every write this connection made (run it in one
    pipeline after a write), or `timeout_ms` passed; -> how many hold them."""
    return Command((("WAIT", replicas, timeout_ms),), _count)
