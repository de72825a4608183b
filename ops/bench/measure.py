"""What one streamed job looked like from its reader's clock, and summaries over runs.

Every path is measured the same way: `first_token_s` from the start (a call, a submit, a
request) until the first token arrived, and `span_s` from that first token until the end
(the last token in-process, the terminal frame or event when streamed). Decode rate is
`(tokens - 1) / span_s`, so prompt evaluation and first-token latency stay out of it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

MS_PER_S = 1000.0


@dataclass(frozen=True)
class Run:
    tokens: int
    first_token_s: float
    span_s: float

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens - 1) / self.span_s if self.tokens > 1 and self.span_s > 0 else 0.0

    @property
    def job_s(self) -> float:
        """Start to end, first-token latency included."""
        return self.first_token_s + self.span_s


@dataclass(frozen=True)
class PathResult:
    """One path's measured runs (warm-ups excluded)."""

    name: str
    runs: Sequence[Run]

    @property
    def tokens(self) -> int:
        return min(run.tokens for run in self.runs)

    @property
    def tokens_per_s(self) -> float:
        return statistics.median(run.tokens_per_s for run in self.runs)

    @property
    def first_token_ms(self) -> float:
        return statistics.median(run.first_token_s for run in self.runs) * MS_PER_S

    @property
    def job_ms(self) -> float:
        return statistics.median(run.job_s for run in self.runs) * MS_PER_S

    @property
    def first_token_p90_ms(self) -> float:
        return percentile([run.first_token_s for run in self.runs], 90) * MS_PER_S


def percentile(values: Sequence[float], pct: int) -> float:
    """Inclusive percentile (the median at 50); the single value for one sample."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]
