"""The batch budget on the tiny model (real llama.cpp): a decode step never holds more than
`n_batch` tokens. A worker refuses more slots than that at start (genq.common.plan); the decoder
refuses a token past it, and the engine, given more generating sequences than a step holds,
takes them in turn and leaves the rest for the next step."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import closing

import pytest

from genq.common.errors import GenerationError
from genq.common.plan import plan_llama
from genq.common.registry import LlamaModelConfig
from genq.common.schemas import JobSpec
from genq.common.tinymodel import TINY_N_CTX, ensure_tiny_model
from genq.workers.backends.llama import LlamaBackend
from genq.workers.runtime.decoder import Decoder
from genq.workers.runtime.engine import Engine

SLOTS = 4
BUDGET = 2  # tokens per step: half the sequences that generate
TOKENS = 120  # per job


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaBackend]:
    path = ensure_tiny_model(tmp_path_factory.mktemp("tiny"))
    config = LlamaModelConfig(path=path, n_ctx=TINY_N_CTX, n_threads=1, n_batch=64)
    loaded = LlamaBackend("tiny", config, path, plan_llama("tiny", config, SLOTS))
    yield loaded
    loaded.close()


class Recorded(Decoder):
    """A decoder of the tiny model whose steps take `budget` tokens, fewer than its sequences
    (its llama.cpp context holds one per sequence, as start-up requires), and that records the
    sequences of every step it decodes."""

    def __init__(self, backend: LlamaBackend, n_seq: int, budget: int) -> None:
        super().__init__(backend.model, backend.n_ctx, n_seq, n_seq, 1, "tiny")
        self.n_batch = budget
        self.steps: list[list[int]] = []
        self._building: list[int] = []

    def add(self, token: int, pos: int, seq: int, output: bool) -> int:
        index = super().add(token, pos, seq, output)
        self._building.append(seq)
        return index

    def decode(self) -> None:
        self.steps.append(self._building)
        self._building = []
        super().decode()


def spec(seed: int) -> JobSpec:
    return JobSpec(prompt=f"budget {seed}", seed=seed, temperature=1.0, ignore_eos=True)


def alone(backend: LlamaBackend, job_spec: JobSpec, n: int) -> list[int]:
    """`n` tokens of the job in the backend's own engine, its batch never short of room."""
    sequence = backend.sequence(job_spec)
    try:
        seed = job_spec.seed or 0
        tokens = sequence.tokens(backend.prompt_tokens(job_spec), job_spec, seed, 0)
        with closing(tokens):
            return [s.token for s in itertools.islice(tokens, n)]
    finally:
        sequence.close()


def run_jobs(backend: LlamaBackend, engine: Engine, specs: list[JobSpec]) -> dict[int, list[int]]:
    """Each job's TOKENS tokens, every job in a thread of its own, started together."""
    out: dict[int, list[int]] = {}
    together = threading.Barrier(len(specs))

    def job(i: int) -> None:
        job_spec, slot = specs[i], engine.acquire()
        seed, prompt = job_spec.seed or 0, backend.prompt_tokens(job_spec)
        together.wait()
        tokens = engine.decode(slot, prompt, backend.sampler(job_spec, seed, prompt, 0))
        try:
            with closing(tokens):
                out[i] = [s.token for s in itertools.islice(tokens, TOKENS)]
        finally:
            engine.release(slot)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def test_the_decoder_refuses_a_token_past_its_batch(backend: LlamaBackend) -> None:
    decoder = Decoder(backend.model, backend.n_ctx, 1, 4, 1, "tiny")
    try:
        decoder.add_all([1, 2, 3, 4], 0, 0, output_last=True)
        assert decoder.room == 0
        with pytest.raises(GenerationError, match="model 'tiny': batch full at 4 tokens"):
            decoder.add(5, 4, 0, output=True)
        decoder.decode()
        assert decoder.room == 4
    finally:
        decoder.close()


def test_more_generating_sequences_than_a_step_holds_take_turns_within_n_batch(
    backend: LlamaBackend,
) -> None:
    decoder = Recorded(backend, SLOTS, BUDGET)
    engine = Engine(decoder)
    specs = [spec(seed) for seed in range(SLOTS)]
    try:
        out = run_jobs(backend, engine, specs)
    finally:
        engine.close()
    assert max(len(step) for step in decoder.steps) == BUDGET
    # A sequence that waited a step decodes what it would have with room to spare.
    assert [out[i] for i in range(SLOTS)] == [alone(backend, s, TOKENS) for s in specs]
    # In turn: when the first job has all its tokens, every other job is well on its way
    # (taken in order of their slots, the last two would not have started).
    first_done = min(
        max(i for i, step in enumerate(decoder.steps) if seq in step) for seq in range(SLOTS)
    )
    decoded = [sum(seq in step for step in decoder.steps[:first_done]) for seq in range(SLOTS)]
    assert min(decoded) >= TOKENS // 4, decoded
