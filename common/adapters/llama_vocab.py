"""End-of-generation tokens of a llama-cpp-python model.

Borrowed: `Llama._model.vocab`, the model's `llama_vocab` pointer (llama-cpp-python 0.3.x),
given to llama.cpp's public `llama_vocab_is_eog`, which knows every end token of a model: EOS,
and the EOT/EOM tokens of chat models. Fallback (the internal gone): the public
`Llama.token_eos()` alone, so a chat model's end-of-turn token would not end a job (it would
run on to its max_tokens or a stop sequence); said once in the log. Contract:
tests/unit/test_adapters.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from llama_cpp import Llama, llama_vocab_is_eog

log = logging.getLogger(__name__)


def vocab_of(llm: Llama) -> object | None:
    """The model's llama_vocab pointer where llama-cpp-python keeps it; None otherwise."""
    return getattr(getattr(llm, "_model", None), "vocab", None)


def end_check(llm: Llama, borrow: bool = True) -> Callable[[int], bool]:
    """Whether a token ends generation, for this model."""
    vocab = vocab_of(llm) if borrow else None
    if vocab is not None:
        return lambda token: bool(llama_vocab_is_eog(vocab, token))
    if borrow:
        log.warning("llama-cpp-python keeps no Llama._model.vocab: only EOS ends generation")
    eos = llm.token_eos()
    return lambda token: token == eos
