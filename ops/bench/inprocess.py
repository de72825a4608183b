"""The ceiling: the worker's own generation code in this process, with no queue around it.

The model is loaded by workers/backends/llama.py's `LlamaBackend` and a job runs through
workers/generation.py's `generate()` (windows, text assembly, stops, chunking) into a sink
that only notes when the first chunk came: the same code, sampling and chunking as a
worker's, so that the baseline cannot drift from what genq runs. What genq adds on top is
everything else: Celery, leases, Redis, pub/sub, the relay, the reader.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from llama_cpp import Llama

from genq.common.frames import TokenData, WindowData
from genq.common.registry import LlamaModelConfig
from genq.common.schemas import JobSpec
from genq.common.settings import Settings
from genq.workers.backends.llama import LlamaBackend
from genq.workers.generation.chunks import Chunker
from genq.workers.generation.loop import generate
from ops.bench.measure import Run
from ops.bench.workload import Workload

NAME = "in-process (worker's backend)"


def load(name: str, path: Path, config: LlamaModelConfig) -> LlamaBackend:
    """The model as a worker loads it."""
    return LlamaBackend(name, config, path)


@contextmanager
def vocabulary(path: Path) -> Iterator[Llama]:
    """The model's vocabulary alone (no weights, no context): tokenize, detokenize, EOS."""
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        yield llm
    finally:
        llm.close()


def count_prompt(backend: LlamaBackend, spec: JobSpec) -> int:
    return len(backend.prompt_tokens(spec))


def non_utf8_tokens(vocab: Llama) -> list[int]:
    """Tokens whose bytes are not valid UTF-8 on their own (stray byte tokens)."""
    banned = []
    for token in range(vocab.n_vocab()):
        try:
            vocab.detokenize([token]).decode("utf-8")
        except UnicodeDecodeError:
            banned.append(token)
    return banned


@dataclass
class Sink:
    """A FrameSink that keeps what a reader would measure: when the first chunk came, and
    the token ids."""

    cancelled: bool = False
    first: float | None = None
    token_ids: list[int] = field(default_factory=list)

    def token(self, data: TokenData, ending: bool = False) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.token_ids.extend(data.token_ids)

    def continuation(self, window: int) -> None:
        pass

    def publish_window(self, data: WindowData) -> None:
        pass


def chunker(settings: Settings) -> Chunker:
    """The worker's chunking (GENQ_CHUNK_TOKENS, GENQ_CHUNK_INTERVAL_MS)."""
    return Chunker(settings.chunk_tokens, settings.chunk_interval_ms / 1000)


def run_job(backend: LlamaBackend, spec: JobSpec, settings: Settings) -> Sink:
    sink = Sink()
    generate(backend, spec, sink, chunker(settings))
    return sink


def run_once(
    backend: LlamaBackend, workload: Workload, settings: Settings
) -> tuple[Run, list[int]]:
    """One job, timed from the call (prompt evaluation included) to its end."""
    started = time.perf_counter()
    sink = run_job(backend, workload.spec, settings)
    last = time.perf_counter()
    first = sink.first if sink.first is not None else last
    return Run(len(sink.token_ids), first - started, last - first), sink.token_ids
