"""From token pieces (bytes) to final text, incrementally.

Two things hold text back before it is released to a chunk:
- bytes that may still complete a UTF-8 character (an incremental decoder keeps them), and
- a tail that may still grow into a stop sequence.
Released text is never taken back, so the chunks of a job concatenate to its final text.
Invalid bytes become U+FFFD exactly as a one-shot ``bytes.decode("utf-8", "replace")`` would.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextAssembler:
    def __init__(self, stops: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(stops)
        self._pending = ""  # decoded, not yet released: a possible stop-sequence prefix
        self._released: list[str] = []
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that became final (may be empty)."""
        return self._release(self._decoder.decode(piece))

    def finish(self) -> str:
        """No more tokens: flush what was held back (unless a stop sequence ended the text)."""
        if self.stopped:
            return ""
        tail = self._release(self._decoder.decode(b"", final=True))
        rest, self._pending = self._pending, ""
        self._released.append(rest)
        return tail + rest

    @property
    def text(self) -> str:
        """Everything released so far."""
        return "".join(self._released)

    def _release(self, new: str) -> str:
        if self.stopped or not new:
            return ""
        if not self._stops:
            self._released.append(new)
            return new
        buf = self._pending + new
        cut = _first_stop(buf, self._stops)
        if cut is not None:
            self.stopped = True
            out, self._pending = buf[:cut], ""
        else:
            keep = _partial_stop_len(buf, self._stops)
            out, self._pending = buf[: len(buf) - keep], buf[len(buf) - keep :]
        self._released.append(out)
        return out


def _first_stop(buf: str, stops: Sequence[str]) -> int | None:
    """Where the text ends: at the stop sequence that completes first (the longest, on a tie).
    Completion order is what a streaming loop can honour whatever the token boundaries."""
    hits = [(i + len(s), i) for s in stops if (i := buf.find(s)) >= 0]
    return min(hits)[1] if hits else None


def _partial_stop_len(buf: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `buf` that is a proper prefix of some stop sequence."""
    longest = min(len(buf), max(len(s) for s in stops) - 1)
    for k in range(longest, 0, -1):
        suffix = buf[-k:]
        if any(s.startswith(suffix) for s in stops):
            return k
    return 0
