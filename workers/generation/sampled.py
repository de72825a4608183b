"""One sampled token: what a local model's session yields to the generation loop.

Its own module so that the runtime (engine, sampling) need not import the loop to name it.
"""

from __future__ import annotations

from dataclasses import dataclass

from genq.common.schemas import TokenLogprob


@dataclass(frozen=True, slots=True)
class Sampled:
    """A token a local model sampled, with its log probabilities when the job asked."""

    token: int
    logprob: TokenLogprob | None = None
