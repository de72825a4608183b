"""The ceiling: `Llama.generate()` in this process, loaded as the worker loads it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from llama_cpp import Llama, LogitsProcessorList

from common.prompts import prompt_tokens
from common.registry import LlamaModelConfig
from common.schemas import JobSpec
from ops.bench.measure import Run
from ops.bench.workload import Workload

NAME = "in-process Llama.generate()"


def load(path: Path, config: LlamaModelConfig) -> Llama:
    """The same constructor arguments as workers/backends/llama.py."""
    return Llama(
        model_path=str(path),
        n_ctx=config.n_ctx,
        n_threads=config.n_threads,
        n_threads_batch=config.n_threads,
        n_gpu_layers=config.n_gpu_layers,
        n_batch=config.n_batch,
        verbose=False,
    )


def count_prompt(llm: Llama, spec: JobSpec) -> int:
    return len(prompt_tokens(llm, spec))


def non_utf8_tokens(llm: Llama) -> list[int]:
    """Tokens whose bytes are not valid UTF-8 on their own (stray byte tokens)."""
    banned = []
    for token in range(llm.n_vocab()):
        try:
            llm.detokenize([token]).decode("utf-8")
        except UnicodeDecodeError:
            banned.append(token)
    return banned


def bias(llm: Llama, spec: JobSpec) -> LogitsProcessorList:
    """The job's logit bias plus EOS at -inf, applied as the worker applies them."""
    table = {**spec.logit_bias, llm.token_eos(): -np.inf}
    ids = np.fromiter(table.keys(), dtype=np.intc)
    values = np.fromiter(table.values(), dtype=np.single)

    def apply(_input_ids: Any, scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        scores[ids] += values
        return scores

    return LogitsProcessorList([apply])


def run_once(llm: Llama, workload: Workload) -> tuple[Run, list[int]]:
    spec = workload.spec
    prompt = prompt_tokens(llm, spec)
    llm.set_seed(spec.seed if spec.seed is not None else 0)
    ids: list[int] = []
    started = time.perf_counter()
    first = started
    tokens = llm.generate(
        prompt,
        top_k=spec.top_k,
        top_p=spec.top_p,
        min_p=spec.min_p,
        temp=spec.temperature,
        repeat_penalty=spec.repeat_penalty,
        reset=True,
        logits_processor=bias(llm, spec),
    )
    for token in tokens:
        if not ids:
            first = time.perf_counter()
        ids.append(token)
        if len(ids) >= workload.tokens:
            break
    last = time.perf_counter()
    return Run(len(ids), first - started, last - first), ids
