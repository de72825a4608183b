"""runtime/engine and runtime/sampling on the tiny model (real llama.cpp, random weights):
batched sequences, slot hand-outs, cache reuse between windows, resumes at any token that
sample what an uninterrupted run did, and the native sampler chain."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from llama_cpp import llama_context_p

from genq.common.errors import GenerationError, InvalidJob
from genq.common.plan import plan_llama
from genq.common.registry import LlamaModelConfig
from genq.common.schemas import JobSpec
from genq.common.tinymodel import TINY_EOS, TINY_N_CTX, ensure_tiny_model
from genq.workers.backends.llama import LlamaBackend
from genq.workers.generation.loop import TokenSequence
from genq.workers.generation.sampled import Sampled
from genq.workers.runtime.engine import AHEAD, Engine
from genq.workers.runtime.sampling import Sampler

SLOTS = 4


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaBackend]:
    path = ensure_tiny_model(tmp_path_factory.mktemp("tiny"))
    config = LlamaModelConfig(path=path, n_ctx=TINY_N_CTX, n_threads=1, n_batch=64)
    loaded = LlamaBackend("tiny", config, path, plan_llama("tiny", config, SLOTS))
    yield loaded
    loaded.close()


def spec(seed: int = 1, **more: object) -> JobSpec:
    return JobSpec(prompt="engine", seed=seed, ignore_eos=True, **more)  # type: ignore[arg-type]


def take(tokens: Iterator[Sampled], n: int) -> list[Sampled]:
    with closing(tokens):  # type: ignore[type-var]
        return list(itertools.islice(tokens, n))


def test_concurrent_jobs_share_decode_steps(backend: LlamaBackend) -> None:
    engine = backend.engine
    steps = engine.steps
    out: dict[int, list[int]] = {}

    def job(seed: int) -> None:
        job_spec = spec(seed)
        sequence = backend.sequence(job_spec)
        try:
            prompt = backend.prompt_tokens(job_spec)
            out[seed] = [s.token for s in take(sequence.tokens(prompt, job_spec, seed, 0), 100)]
        finally:
            sequence.close()

    threads = [threading.Thread(target=job, args=(seed,)) for seed in range(SLOTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(len(tokens) == 100 for tokens in out.values())
    # One at a time would take 100 steps a job; batched, most steps carry several jobs.
    assert engine.steps - steps < 2 * 100
    assert engine.in_use() == 0


def test_a_full_engine_refuses_a_job_and_hands_a_released_slot_out_again(
    backend: LlamaBackend,
) -> None:
    """A job waits for a slot in its queue (genq.workers.celery.admission), never in the engine."""
    engine = backend.engine
    held = [engine.acquire() for _ in range(SLOTS)]
    with pytest.raises(GenerationError, match=f"every one of the engine's {SLOTS} slots"):
        engine.acquire()
    engine.release(held[2])
    assert engine.acquire() is held[2]
    for slot in held:
        engine.release(slot)
    assert engine.in_use() == 0


def test_a_window_continuing_the_last_evaluates_only_what_changed(backend: LlamaBackend) -> None:
    job_spec = JobSpec(prompt="engine " * 20, seed=3, ignore_eos=True)
    sequence = backend.sequence(job_spec)
    try:
        prompt = backend.prompt_tokens(job_spec)
        first = [s.token for s in take(sequence.tokens(prompt, job_spec, 3, 0), 20)]
        before = backend.engine.evaluated
        take(sequence.tokens(prompt + first, job_spec, 4, 20), 1)
        # The last context token (for its logits), and what the engine decoded ahead of the
        # job (AHEAD) before it closed the window; not the whole context.
        assert backend.engine.evaluated - before <= 1 + AHEAD
        before = backend.engine.evaluated
        take(sequence.tokens(prompt + first[:5] + [first[0]], job_spec, 5, 6), 1)
        assert backend.engine.evaluated - before <= 1 + AHEAD
        assert len(prompt) > 40
        with pytest.raises(GenerationError, match="sequence full at 256 tokens"):
            take(sequence.tokens(prompt, job_spec, 6, 0), TINY_N_CTX)
    finally:
        sequence.close()


def sampled(
    backend: LlamaBackend, job_spec: JobSpec, context: list[int], position: int, n: int
) -> list[int]:
    """`n` tokens after `context` in a slot of the engine, the first at output `position`."""
    sequence: TokenSequence = backend.sequence(job_spec)
    try:
        seed = job_spec.seed or 0
        return [s.token for s in take(sequence.tokens(context, job_spec, seed, position), n)]
    finally:
        sequence.close()


def busy_neighbours(backend: LlamaBackend, n: int, stop: threading.Event) -> list[threading.Thread]:
    """`n` jobs decoding in other slots until `stop`: different batches at every step."""

    def run(seed: int) -> None:
        job_spec = JobSpec(prompt="neighbour " * (seed + 1), seed=seed, ignore_eos=True)
        sequence = backend.sequence(job_spec)
        try:
            tokens = sequence.tokens(backend.prompt_tokens(job_spec), job_spec, seed, 0)
            with closing(tokens):
                for _ in tokens:
                    if stop.is_set():
                        return
        except GenerationError:  # its sequence filled up: it has done its part
            return
        finally:
            sequence.close()

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(n)]
    for thread in threads:
        thread.start()
    return threads


def test_a_sampled_job_resumed_at_any_token_beside_other_jobs_draws_the_same_tokens(
    backend: LlamaBackend,
) -> None:
    """Bit-identical logits whatever the batch and however the context was evaluated, and a
    draw seeded by the token's position: a resume at token k, beside other jobs, continues
    with exactly the tokens that a lone, uninterrupted run had."""
    job_spec = spec(9, temperature=1.0, repeat_penalty=1.3, top_k=20)
    prompt = backend.prompt_tokens(job_spec)
    alone = sampled(backend, job_spec, prompt, 0, 60)
    assert len(set(alone)) > 5  # sampled, not one token over and over
    stop = threading.Event()
    neighbours = busy_neighbours(backend, SLOTS - 1, stop)
    try:
        for k in (0, 1, 7, 23, 59):
            assert sampled(backend, job_spec, prompt + alone[:k], k, 60 - k) == alone[k:]
    finally:
        stop.set()
        for thread in neighbours:
            thread.join()
    other_seed = spec(10, temperature=1.0, repeat_penalty=1.3, top_k=20)
    assert sampled(backend, other_seed, prompt, 0, 60) != alone


def test_native_logit_bias_and_ignore_eos_steer_sampling(backend: LlamaBackend) -> None:
    forced = spec(2, temperature=1.0, logit_bias={7: 100.0})
    sequence = backend.sequence(forced)
    try:
        prompt = backend.prompt_tokens(forced)
        assert {s.token for s in take(sequence.tokens(prompt, forced, 2, 0), 20)} == {7}
        eos_first = spec(2, temperature=1.0, logit_bias={TINY_EOS: 100.0})
        assert {s.token for s in take(sequence.tokens(prompt, eos_first, 2, 0), 20)} != {TINY_EOS}
    finally:
        sequence.close()


def test_a_logit_bias_outside_the_vocabulary_is_refused(backend: LlamaBackend) -> None:
    with pytest.raises(InvalidJob, match="outside the model's vocabulary"):
        backend.sampler(spec(logit_bias={10**6: 1.0}), 1)


def test_log_probabilities_come_from_each_sequences_own_logits(backend: LlamaBackend) -> None:
    greedy = spec(4, temperature=0.0, logprobs=3)
    sequence = backend.sequence(greedy)
    try:
        prompt = backend.prompt_tokens(greedy)
        for sampled in take(sequence.tokens(prompt, greedy, 4, 0), 10):
            assert sampled.logprob is not None
            top = sampled.logprob.top
            assert len(top) == 3
            values = [t.logprob for t in top]
            assert None not in values
            assert values == sorted(values, reverse=True)
            # Greedy: the sampled token is the most likely one.
            own = sampled.logprob.logprob
            assert own is not None and own <= 0.0
            assert own == pytest.approx(values[0])
    finally:
        sequence.close()


def test_engine_closes_with_its_thread(tmp_path: Path) -> None:
    path = ensure_tiny_model(tmp_path)
    config = LlamaModelConfig(path=path, n_ctx=TINY_N_CTX, n_threads=1, n_batch=64)
    loaded = LlamaBackend("tiny", config, path, plan_llama("tiny", config, 2))
    engine: Engine = loaded.engine
    assert engine.running
    loaded.close()
    assert not engine.running


def test_a_repeat_penalty_lowers_repeats_and_keeps_a_window_reproducible(
    backend: LlamaBackend,
) -> None:
    """The penalty sampler sees the window's context as history, so it is part of the window's
    computation: the same window twice gives the same tokens, and a strong penalty repeats
    the context's tokens less than no penalty does."""
    plain = spec(6, temperature=0.0)
    penalized = spec(6, temperature=0.0, repeat_penalty=5.0)
    prompt = backend.prompt_tokens(plain)

    def window(job_spec: JobSpec) -> list[int]:
        return sampled(backend, job_spec, prompt, 0, 40)

    assert window(penalized) == window(penalized)

    def repeats(tokens: list[int]) -> int:
        return sum(1 for i, t in enumerate(tokens) if t in tokens[max(0, i - 64) : i])

    assert repeats(window(penalized)) < repeats(window(plain))


class BreaksWhenArmed(Sampler):
    """A real sampler chain whose draw fails from the moment `armed` is set (a sampler's or
    a log probability's bug, say), and says so in `failed` first."""

    armed = threading.Event()
    failed = threading.Event()

    def sample(self, ctx: llama_context_p, index: int) -> Sampled:
        if self.armed.is_set():
            self.failed.set()
            raise RuntimeError("the sampler broke")
        return super().sample(ctx, index)


def test_one_failing_sequence_ends_its_job_alone_and_leaves_the_others_exact(
    backend: LlamaBackend,
) -> None:
    """Three jobs run beside a fourth whose sampler fails while they are half way: the
    fourth ends with a GenerationError, and the three end with exactly the tokens they have
    without it (the engine is batch-invariant, so any other difference is the failure's)."""
    n, half = 80, 20
    specs = [spec(seed, temperature=1.0, top_k=20, repeat_penalty=1.2) for seed in (31, 32, 33)]
    alone = [sampled(backend, s, backend.prompt_tokens(s), 0, n) for s in specs]
    BreaksWhenArmed.armed.clear()
    BreaksWhenArmed.failed.clear()
    halfway = threading.Barrier(len(specs), action=BreaksWhenArmed.armed.set)
    got: dict[int, list[int]] = {}

    def neighbour(i: int) -> None:
        sequence = backend.sequence(specs[i])
        try:
            tokens = sequence.tokens(backend.prompt_tokens(specs[i]), specs[i], 31 + i, 0)
            with closing(tokens):
                got[i] = [s.token for s in itertools.islice(tokens, half)]
                halfway.wait(timeout=60)  # then the fourth job's sampler fails,
                assert BreaksWhenArmed.failed.wait(timeout=60)  # while this window is open
                got[i] += [s.token for s in itertools.islice(tokens, n - half)]
        finally:
            sequence.close()

    engine = backend.engine
    slot = engine.acquire()
    failing = spec(34, temperature=1.0)
    prompt = backend.prompt_tokens(failing)
    window = engine.decode(slot, prompt, BreaksWhenArmed(failing, 34, backend.vocab, prompt))
    threads = [threading.Thread(target=neighbour, args=(i,)) for i in range(len(specs))]
    for thread in threads:
        thread.start()
    try:
        with closing(window), pytest.raises(GenerationError, match="the sampler broke"):
            for _ in window:  # until its sampler fails
                pass
    finally:
        engine.release(slot)
        for thread in threads:
            thread.join()
    assert [got.get(i) for i in range(len(specs))] == alone
    assert engine.in_use() == 0
