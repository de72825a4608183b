"""A model's broker queue as Redis holds it: one list per priority step (named as kombu names
them: genq.common.celery_config.priority_lists). Kombu owns the lists; genq only counts them."""

from __future__ import annotations

from typing import Any

from genq.common.celery_config import priority_lists
from genq.common.store.command import Command


def depth(queue: str) -> Command[int]:
    """Task messages waiting in `queue`, at every priority."""
    calls = tuple(("LLEN", name) for name in priority_lists(queue))
    return Command(calls, lambda replies: sum(int(n) for n in replies))


def depths(queues: list[str]) -> Command[list[int]]:
    """Each queue's waiting task messages, in one pipeline."""
    lists = [priority_lists(queue) for queue in queues]
    calls = tuple(("LLEN", name) for names in lists for name in names)

    def decode(replies: list[Any]) -> list[int]:
        out, at = [], 0
        for names in lists:
            out.append(sum(int(n) for n in replies[at : at + len(names)]))
            at += len(names)
        return out

    return Command(calls, decode)
