"""The llama backend: a local GGUF model run by llama-cpp-python.

`Llama` provides the vocabulary, tokenizer and chat template (`vocab_only`); the weights are
loaded for batch-invariant decoding (runtime/weights), and every job's tokens are decoded in a
slot of the model's batched engine (runtime/engine), beside up to `slots - 1` other jobs. The
engine's logits do not depend on the batch, so every job is deterministic, batched: a resume
on any worker continues with the tokens an uninterrupted run would have had.
Sampling is llama.cpp's native sampler chain (genq.workers.runtime.sampling).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Sequence
from pathlib import Path

from llama_cpp import Llama, llama_model_p

from genq.common.adapters.ggml_invariance import make_invariant, warn_if_variant
from genq.common.adapters.llama_vocab import end_check
from genq.common.errors import ModelLoadError
from genq.common.logs import fields
from genq.common.plan import LlamaPlan, plan_llama
from genq.common.prompts import (
    chat_template,
    check_context,
    implicit_stops,
    prompt_tokens,
    transcript_labels,
)
from genq.common.registry import LlamaModelConfig
from genq.common.schemas import JobSpec
from genq.workers.generation.loop import TokenSequence, TokenSession
from genq.workers.generation.sampled import Sampled
from genq.workers.runtime.decoder import Decoder
from genq.workers.runtime.engine import Engine, Slot
from genq.workers.runtime.sampling import Sampler, Vocabulary
from genq.workers.runtime.weights import free_weights, load_weights

log = logging.getLogger(__name__)
# The context `Llama` itself creates is never decoded in (the engine has its own): the
# smallest llama.cpp accepts keeps its memory small.
LOADER_N_CTX = 64


class LlamaBackend:
    """One loaded model, shared by a worker process's job threads."""

    def __init__(
        self, name: str, config: LlamaModelConfig, path: Path, plan: LlamaPlan | None = None
    ) -> None:
        """`plan`: how to run it (genq.common.plan; by default, its entry's with one slot)."""
        self.name = name
        self.config = config
        self.plan = plan or plan_llama(name, config)
        if self.plan.problem is not None:  # a worker refuses it at start (genq.common.routing)
            raise ModelLoadError(f"model {name!r}: {self.plan.problem}")
        self.slots = self.plan.slots
        try:
            self._llm = Llama(
                model_path=str(path),
                vocab_only=True,
                n_ctx=LOADER_N_CTX,
                n_batch=LOADER_N_CTX,
                # Its idle OpenMP threads would spin between jobs, starving other workers
                # (measured: 5 ms jobs took 55-125).
                n_threads=self.plan.threads,
                n_threads_batch=self.plan.threads,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"model {name!r}: cannot load {path}: {exc}") from exc
        make_invariant()
        warn_if_variant()
        self.model: llama_model_p = load_weights(path, self.plan.n_gpu_layers, name)
        self.n_ctx: int = self.plan.n_ctx
        self.threads: int = self.plan.threads
        self._pieces: dict[int, bytes] = {}
        self._is_end = end_check(self._llm)
        self.vocab = Vocabulary(self._llm.n_vocab(), self._llm.token_eos(), self._text)
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        if chat_template(self._llm, config) is None:
            labels = transcript_labels(config.chat_labels)
            log.warning(
                "model has no chat template (neither its file nor its registry entry): chats "
                "are rendered as a `label: content` transcript, ended at the next label",
                extra=fields(model=name, labels=",".join(dict.fromkeys(labels.values()))),
            )

    def _decoder(self) -> Decoder:
        plan = self.plan
        return Decoder(self.model, plan.n_ctx, plan.slots, plan.n_batch, plan.threads, self.name)

    @property
    def engine(self) -> Engine:
        """The batched engine, made when a job first needs it."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = Engine(self._decoder())
                plan = self.plan
                log.info(
                    "engine started",
                    extra=fields(
                        model=self.name,
                        slots=plan.slots,
                        n_ctx=plan.n_ctx,
                        n_batch=plan.n_batch,
                        threads=plan.threads,
                    ),
                )
            return self._engine

    def close(self) -> None:
        """Free the model's memory now (the worker's budget unloaded it)."""
        if self._engine is not None:
            self._engine.close()
        free_weights(self.model)
        self._llm.close()

    def session(self, spec: JobSpec) -> TokenSession:
        session = TokenSession(self, spec)
        session.stops = implicit_stops(self._llm, spec, self.config)
        return session

    def sequence(self, spec: JobSpec) -> TokenSequence:
        engine = self.engine
        return _Batched(self, engine, engine.acquire())

    def sampler(
        self, spec: JobSpec, seed: int, context: Sequence[int] = (), position: int = 0
    ) -> Sampler:
        """A window's sampler chain; `context` is the history its repeat penalty sees, and
        `position` the output position of its first token."""
        return Sampler(spec, seed, self.vocab, context, position)

    def prompt_tokens(self, spec: JobSpec) -> list[int]:
        tokens = prompt_tokens(self._llm, spec, self.config)
        check_context(len(tokens), self.n_ctx, self.name)
        return tokens

    def is_end(self, token: int) -> bool:
        """End of generation: EOS, and also EOT/EOM tokens of chat models."""
        return self._is_end(token)

    def piece(self, token: int) -> bytes:
        """The token's bytes (a byte token may be part of a UTF-8 character)."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._llm.detokenize([token])
        return piece

    def _text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", "replace")


class _Batched:
    """A job's slot of the model's engine."""

    def __init__(self, backend: LlamaBackend, engine: Engine, slot: Slot) -> None:
        self._backend, self._engine, self._slot = backend, engine, slot

    def tokens(
        self, context: list[int], spec: JobSpec, seed: int, position: int
    ) -> Generator[Sampled]:
        sampler = self._backend.sampler(spec, seed, context, position)
        return self._engine.decode(self._slot, context, sampler)

    def close(self) -> None:
        self._engine.release(self._slot)
