"""The llama backend: a local GGUF model run by llama-cpp-python.

The token loop is driven through `Llama.generate()`, one token at a time; llama-cpp-python's
`create_completion(stream=True)` is avoided because it slows quadratically with output length.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from llama_cpp import Llama, LogitsProcessorList, llama_get_logits_ith

from common.adapters.llama_vocab import end_check
from common.errors import InvalidJob, ModelLoadError
from common.logs import fields
from common.prompts import (
    chat_template,
    check_context,
    implicit_stops,
    prompt_tokens,
    transcript_labels,
)
from common.registry import LlamaModelConfig
from common.schemas import JobSpec, TokenLogprob, TopLogprob
from workers.generation import TokenSession

log = logging.getLogger(__name__)


class LlamaBackend:
    """One loaded model. Not thread-safe: a worker process runs one job at a time."""

    def __init__(self, name: str, config: LlamaModelConfig, path: Path) -> None:
        self.name = name
        self.config = config
        try:
            self._llm = Llama(
                model_path=str(path),
                n_ctx=config.n_ctx,
                n_threads=config.n_threads,
                # Prompt evaluation would otherwise use every core, and its idle OpenMP threads
                # spin between jobs, starving other workers (measured: 5 ms jobs took 55-125).
                n_threads_batch=config.n_threads,
                n_gpu_layers=config.n_gpu_layers,
                n_batch=config.n_batch,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"model {name!r}: cannot load {path}: {exc}") from exc
        self.n_ctx: int = self._llm.n_ctx()
        self._pieces: dict[int, bytes] = {}
        self._is_end = end_check(self._llm)
        if chat_template(self._llm, config) is None:
            labels = transcript_labels(config.chat_labels)
            log.warning(
                "model has no chat template (neither its file nor its registry entry): chats "
                "are rendered as a `label: content` transcript, ended at the next label",
                extra=fields(model=name, labels=",".join(dict.fromkeys(labels.values()))),
            )

    def close(self) -> None:
        """Free the model's memory now (the worker's budget unloaded it)."""
        self._llm.close()

    def session(self, spec: JobSpec) -> TokenSession:
        session = TokenSession(self, spec)
        session.stops = implicit_stops(self._llm, spec, self.config)
        return session

    def prompt_tokens(self, spec: JobSpec) -> list[int]:
        tokens = prompt_tokens(self._llm, spec, self.config)
        check_context(len(tokens), self.n_ctx, self.name)
        return tokens

    def tokens(self, context: list[int], spec: JobSpec, seed: int) -> Iterator[int]:
        """Sampled token ids after `context`, endlessly; the caller decides when to stop.
        The context is evaluated afresh (no KV-cache reuse): a window must compute the same
        whether it follows the previous window here or resumes on another worker."""
        self._llm.reset()  # type: ignore[no-untyped-call]
        self._llm.set_seed(seed)
        return self._llm.generate(
            context,
            top_k=spec.top_k,
            top_p=spec.top_p,
            min_p=spec.min_p,
            temp=spec.temperature,
            repeat_penalty=spec.repeat_penalty,
            reset=False,
            logits_processor=self._logits_processor(spec),
        )

    def is_end(self, token: int) -> bool:
        """End of generation: EOS, and also EOT/EOM tokens of chat models."""
        return self._is_end(token)

    def piece(self, token: int) -> bytes:
        """The token's bytes (a byte token may be part of a UTF-8 character)."""
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._llm.detokenize([token])
        return piece

    def logprob(self, token: int, top: int) -> TokenLogprob:
        """From the logits the token was sampled from (still in the context until the next
        evaluation): log-softmax of the raw logits, before temperature and other sampling
        settings, as OpenAI and llama.cpp's servers report them."""
        n_vocab = self._llm.n_vocab()
        raw = np.ctypeslib.as_array(llama_get_logits_ith(self._llm.ctx, -1), shape=(n_vocab,))
        logits = raw.astype(np.float64)
        peak = logits.max()
        logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))
        best: list[int] = []
        if top:
            part = np.argpartition(-logprobs, min(top, n_vocab) - 1)[:top]
            best = sorted(part.tolist(), key=lambda t: (-logprobs[t], t))
        return TokenLogprob(
            token=self._text(token),
            logprob=float(logprobs[token]),
            top=[TopLogprob(token=self._text(t), logprob=float(logprobs[t])) for t in best],
        )

    def _text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", "replace")

    def _logits_processor(self, spec: JobSpec) -> LogitsProcessorList | None:
        bias = dict(spec.logit_bias)
        if spec.ignore_eos:
            bias[self._llm.token_eos()] = -np.inf
        if not bias:
            return None
        ids = np.fromiter(bias.keys(), dtype=np.intc)
        values = np.fromiter(bias.values(), dtype=np.single)
        if ids.size and (ids.min() < 0 or ids.max() >= self._llm.n_vocab()):
            raise InvalidJob(
                f"logit_bias names a token id outside model {self.name!r}'s vocabulary"
            )

        def apply(_input_ids: Any, scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
            scores[ids] += values
            return scores

        return LogitsProcessorList([apply])
