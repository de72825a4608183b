"""The Redis lists kombu keeps a queue's waiting messages in, one per priority step.

Borrowed: kombu's Redis transport names the list of priority step p `<queue><sep><p>` (the
bare queue name for step 0), with `sep` the class attribute `Channel.sep` (kombu 5.x:
"\\x06\\x16"; see `kombu.transport.redis.Channel._q_for_pri`). Fallback (the attribute gone):
the separator kombu 5 used. Contract: tests/unit/test_adapters.py compares these names with
kombu's own `_q_for_pri`, so a kombu that names them otherwise fails the test loudly.
"""

from __future__ import annotations

from collections.abc import Sequence

KOMBU_5_SEP = "\x06\x16"


def separator(borrow: bool = True) -> str:
    """kombu's priority separator, where kombu declares it; else kombu 5's."""
    if borrow:
        try:
            from kombu.transport.redis import Channel
        except ImportError:  # kombu's Redis transport needs redis-py: genq has it
            return KOMBU_5_SEP
        sep = getattr(Channel, "sep", None)
        if isinstance(sep, str) and sep:
            return sep
    return KOMBU_5_SEP


def priority_lists(queue: str, steps: Sequence[int], sep: str | None = None) -> list[str]:
    """The Redis lists holding `queue`'s waiting messages, one per priority step."""
    sep = separator() if sep is None else sep
    return [f"{queue}{sep}{step}" if step else queue for step in steps]
