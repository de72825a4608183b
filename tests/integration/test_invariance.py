"""The engine's batch invariance on the tiny model: a sequence's logits are bit-identical
beside 0 to slots-1 other sequences, and after its context was evaluated in chunks of 1, 7,
64 or n_batch tokens (tests/invariance.py runs the probes; tests/realmodel has gemma's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from genq.common.tinymodel import TINY_N_CTX, ensure_tiny_model
from tests.invariance import Model, assert_invariant, open_model

SLOTS = 8
N_BATCH = 128


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    path = ensure_tiny_model(Path(tmp_path_factory.mktemp("tiny")))
    with open_model(path, n_ctx=TINY_N_CTX, slots=SLOTS, n_batch=N_BATCH) as model:
        yield model


@pytest.mark.parametrize("others", range(SLOTS))
def test_a_sequences_logits_do_not_depend_on_its_batch_neighbours(tiny: Model, others: int) -> None:
    assert_invariant(tiny, others=others)


@pytest.mark.parametrize("chunk", [1, 7, 64, N_BATCH])
def test_a_sequences_logits_do_not_depend_on_how_its_context_was_evaluated(
    tiny: Model, chunk: int
) -> None:
    assert_invariant(tiny, chunk=chunk)
