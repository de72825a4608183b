"""The producer's checks against a model's vocabulary (genq.common.prompts.PromptCounter, on the
built-in tiny model, 256 tokens of context): a prompt that cannot fit is told from a bounded
prefix of it, one near the limit is counted whole, and a logit_bias id outside the
vocabulary is refused before anything is queued."""

from __future__ import annotations

from pathlib import Path

import pytest

from genq.common.errors import InvalidJob, PromptTooLong
from genq.common.prompts import PromptCounter, count_tokens, prefix_bytes
from genq.common.registry import LlamaModelConfig, ModelRegistry
from genq.common.schemas import JobSpec
from genq.common.settings import Settings
from genq.producer.core import check_job

TINY_LONGEST = 8  # bytes of tiny's longest token, "▁über" (see test_ggufmeta.py)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(cache_dir=tmp_path)


@pytest.fixture
def registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry.from_settings(settings)


@pytest.fixture
def tiny(registry: ModelRegistry) -> LlamaModelConfig:
    return registry.llama("tiny")


def test_a_prompt_far_past_the_context_is_refused_from_a_prefix_of_it(
    registry: ModelRegistry, tiny: LlamaModelConfig
) -> None:
    """A million characters with no space took minutes to tokenize whole; the prefix that
    tells it cannot fit is (256 + 1) x 8 bytes: 2,056 byte tokens and a BOS."""
    assert prefix_bytes(tiny.n_ctx, TINY_LONGEST) == 2056
    with pytest.raises(PromptTooLong, match=r"prompt is at least 2057 tokens; .* 256 tokens"):
        PromptCounter(registry).check_fits(JobSpec(prompt="a" * 1_000_000), tiny)


def test_a_prompt_at_the_edge_of_the_context_is_counted_whole(
    registry: ModelRegistry, tiny: LlamaModelConfig
) -> None:
    counter = PromptCounter(registry)
    counter.check_fits(JobSpec(prompt="a" * 254), tiny)  # 255 tokens with the BOS: one left
    with pytest.raises(PromptTooLong, match=r"prompt is 256 tokens; model 'tiny'"):
        counter.check_fits(JobSpec(prompt="a" * 255), tiny)


def test_a_prefix_is_never_cut_inside_a_character(registry: ModelRegistry) -> None:
    llm = PromptCounter(registry)._vocab("tiny")

    def tokens(text: str) -> int:
        return len(llm.tokenize(text.encode(), add_bos=False, special=True))

    text = "é" * 10  # 2 bytes each: a prefix of 5 bytes would end inside the third
    inside = len(llm.tokenize("éé".encode() + b"\xc3", add_bos=False, special=True))
    assert inside != tokens("éé")  # so the count tells where the prefix ended
    assert count_tokens(llm, text.encode(), False, 5) == (tokens("éé"), False)
    assert count_tokens(llm, text.encode(), False, 20) == (tokens(text), True)


def test_the_vocabulary_read_from_the_file_is_the_one_llama_cpp_loads(
    registry: ModelRegistry,
) -> None:
    counter = PromptCounter(registry)
    vocab = counter.vocabulary("tiny")
    assert vocab is not None and vocab.size == counter._vocab("tiny").n_vocab() == 276


def test_a_logit_bias_id_outside_the_vocabulary_is_refused_before_queueing(
    settings: Settings, registry: ModelRegistry
) -> None:
    counter = PromptCounter(registry)
    check_job(JobSpec(prompt="a", logit_bias={275: 5.0}), settings, registry, counter)
    with pytest.raises(InvalidJob, match=r"token id 276 .* vocabulary of 276 tokens \(ids 0-275\)"):
        check_job(JobSpec(prompt="a", logit_bias={3: 1.0, 276: 5.0}), settings, registry, counter)


def test_without_the_models_file_the_checks_are_left_to_the_worker(
    settings: Settings, tmp_path: Path
) -> None:
    models = tmp_path / "models.toml"
    missing = tmp_path / "elsewhere.gguf"
    models.write_text(f'[models.far]\nbackend = "llama"\npath = "{missing}"\nn_ctx = 64\n')
    registry = ModelRegistry.from_settings(settings.model_copy(update={"models_file": models}))
    counter, far = PromptCounter(registry), registry.llama("far")
    counter.check_fits(JobSpec(model="far", prompt="a" * 10_000), far)
    counter.check_bias(JobSpec(model="far", prompt="a", logit_bias={10**6: 1.0}))
