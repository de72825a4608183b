"""Continuous batching: up to `slots` jobs of one model decoded together, one llama.cpp context.

Each job holds a slot (a sequence of the context) while it runs. One engine thread builds
every step's batch: the next token of each generating sequence, then prompt chunks of windows
that are starting, up to `n_batch` tokens in all, so a long prompt delays running streams by
at most one chunk. After the decode, each sequence samples from its own logits row with its
own sampler chain (workers.runtime.sampling) and hands the token to its job's thread, which does the
rest (text, stops, frames) while the next step decodes.

A job joins between steps and leaves at once: a finished or cancelled window stops being
decoded on the next step. A slot keeps its sequence's cache after a window or job, so a window
that continues the previous one, or a job that repeats a prompt, evaluates only what differs.
Every edit of the cache and every decode happens on the engine thread.

A job never waits for a slot here: workers.celery.admission keeps it in its queue until one is free.
A sequence whose sampling fails ends its own job's window and no other; a failed decode ends
every running window (`Engine._failed` says why).

Batched decode here is batch-invariant (workers.runtime.decoder): a sequence's logits, and so its
job's tokens, are the same beside any neighbours and however its context was evaluated, so
every job is reproducible bit for bit, and a resume anywhere continues it exactly.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from genq.common.errors import GenerationError
from genq.workers.generation.sampled import Sampled
from genq.workers.runtime.decoder import Decoder, common_prefix
from genq.workers.runtime.sampling import Sampler

log = logging.getLogger(__name__)
# Tokens a sequence may be sampled ahead of its job's thread: one being handled there while
# the next decodes; more would be wasted when the job stops.
AHEAD = 2


@dataclass
class _Window:
    context: list[int]
    sampler: Sampler


@dataclass(eq=False)
class Slot:
    """One sequence of the context; lent to one job at a time."""

    seq: int
    ready: threading.Condition  # a token (or an error) for the job's thread
    cached: list[int] = field(default_factory=list)  # the sequence's cache, in order
    request: _Window | None = None  # a window to start, for the engine thread
    sampler: Sampler | None = None  # the running window's
    todo: list[int] = field(default_factory=list)  # context still to evaluate
    next: int | None = None  # sampled, to decode on the next step
    out: deque[Sampled | GenerationError] = field(default_factory=deque)
    decodes: int = 0  # counts the slot's decodes, so that a closed decode's tokens are dropped
    order: int = 0  # when its window started: prompt chunks go first come, first served


class Engine:
    def __init__(self, decoder: Decoder) -> None:
        self._decoder = decoder
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the engine thread waits here
        self._slots = [Slot(seq, threading.Condition(self._lock)) for seq in range(decoder.n_seq)]
        self._free = deque(self._slots)
        self._order = itertools.count()
        self._turn = 0  # the slot whose next token goes first in the next batch (round-robin)
        self._stop = False
        self.steps = 0  # decode calls, for tests and metrics
        self.evaluated = 0  # tokens decoded (prompts and generated), for tests and metrics
        self._thread = threading.Thread(target=self._run, name="genq-engine", daemon=True)
        self._thread.start()

    @property
    def slots(self) -> int:
        return len(self._slots)

    @property
    def running(self) -> bool:
        """Whether the engine thread runs (until `close`)."""
        return self._thread.is_alive()

    def in_use(self) -> int:
        with self._lock:
            return len(self._slots) - len(self._free)

    def acquire(self) -> Slot:
        """A free slot. A job never waits here: the worker starts at most `slots` jobs of a
        model at once (workers.celery.admission), and a job waiting for one waits in its queue."""
        with self._lock:
            if not self._free:
                raise GenerationError(f"every one of the engine's {self.slots} slots is in use")
            return self._free.popleft()

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._end_window(slot)
            self._free.append(slot)

    def decode(self, slot: Slot, context: Sequence[int], sampler: Sampler) -> Generator[Sampled]:
        """Tokens after `context` on the slot's sequence, endlessly; closing the generator
        ends the window (its sampler is freed)."""
        with self._lock:
            self._end_window(slot)
            slot.decodes += 1
            slot.request = _Window(list(context), sampler)
            self._work.notify()
            decode = slot.decodes
        try:
            while True:
                yield self._take(slot)
        finally:
            with self._lock:
                if slot.decodes == decode:
                    self._end_window(slot)

    def _take(self, slot: Slot) -> Sampled:
        with self._lock:
            while not slot.out:
                slot.ready.wait()
            item = slot.out.popleft()
            self._work.notify()  # it may decode this sequence's next token now
        if isinstance(item, GenerationError):
            raise item
        return item

    def _end_window(self, slot: Slot) -> None:
        """Stop decoding the slot's window (under the lock)."""
        if slot.request is not None:
            slot.request.sampler.close()
            slot.request = None
        if slot.sampler is not None:
            slot.sampler.close()
            slot.sampler = None
        slot.todo, slot.next = [], None
        slot.out.clear()

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._work.notify()
        self._thread.join()
        with self._lock:
            for slot in self._slots:
                self._end_window(slot)
        self._decoder.close()

    # The engine thread.

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._has_work():
                    self._work.wait()
                if self._stop:
                    return
            try:
                self._step()
            except GenerationError as exc:
                self._failed(exc)
            except Exception as exc:  # the thread must live: its jobs would wait forever
                log.exception("engine step failed")
                self._failed(GenerationError(f"engine: {type(exc).__name__}: {exc}"))

    def _step(self) -> None:
        with self._lock:
            outputs = self._build()
            self.evaluated += len(self._decoder)
        self._decoder.decode()
        self.steps += 1
        with self._lock:
            self._sample(outputs)

    def _has_work(self) -> bool:
        return any(
            slot.request is not None or slot.todo or self._decodes(slot) or self._is_full(slot)
            for slot in self._slots
        )

    def _is_full(self, slot: Slot) -> bool:
        return slot.next is not None and len(slot.cached) >= self._decoder.n_ctx_seq

    def _decodes(self, slot: Slot) -> bool:
        """A sampled token to decode, the job's thread not too far behind, and room."""
        return (
            slot.next is not None
            and len(slot.out) < AHEAD
            and len(slot.cached) < self._decoder.n_ctx_seq
        )

    def _build(self) -> list[tuple[Slot, int, int]]:
        """This step's batch, never more than `n_batch` tokens: generating sequences' next
        tokens, then prompt chunks. The outputs to sample: (slot, batch index,
        the slot's `decodes` then)."""
        for slot in self._slots:
            if slot.request is not None:
                self._start(slot, slot.request)
        outputs: list[tuple[Slot, int, int]] = []
        for slot in self._generating():
            assert slot.next is not None
            index = self._decoder.add(slot.next, len(slot.cached), slot.seq, output=True)
            slot.cached.append(slot.next)
            slot.next = None
            outputs.append((slot, index, slot.decodes))
        self._add_prompts(outputs)
        return outputs

    def _generating(self) -> list[Slot]:
        """The sequences whose next token this step decodes: as many as the batch holds,
        less one token for a waiting prompt, taken round-robin from the one after the last
        taken, so that none starves. (Start-up refuses more slots than `n_batch`, so they all
        fit; genq.common.plan.)"""
        n = len(self._slots)
        turn = [self._slots[(self._turn + i) % n] for i in range(n)]
        ready = []
        for slot in turn:
            if self._is_full(slot):
                self._full(slot)
            elif self._decodes(slot):
                ready.append(slot)
        reserved = 1 if any(slot.todo for slot in self._slots) else 0
        taken = ready[: max(self._decoder.room - reserved, 0)]
        if taken:
            self._turn = (taken[-1].seq + 1) % n
        return taken

    def _add_prompts(self, outputs: list[tuple[Slot, int, int]]) -> None:
        """Fill the batch with prompt chunks, first come first served."""
        decoder = self._decoder
        for slot in sorted((s for s in self._slots if s.todo), key=lambda s: s.order):
            room = decoder.room
            if room <= 0:
                break
            chunk, slot.todo = slot.todo[:room], slot.todo[room:]
            index = decoder.add_all(chunk, len(slot.cached), slot.seq, output_last=not slot.todo)
            slot.cached.extend(chunk)
            if not slot.todo:
                outputs.append((slot, index, slot.decodes))

    def _full(self, slot: Slot) -> None:
        """The window asked for more than its sequence holds (its job's windows never do)."""
        slot.out.append(GenerationError(f"sequence full at {len(slot.cached)} tokens"))
        slot.next = None
        slot.ready.notify()

    def _start(self, slot: Slot, request: _Window) -> None:
        """Begin a window: keep the cached prefix it shares, evaluate the rest (at least
        its last token, whose logits the first sample needs)."""
        context = request.context
        keep = min(common_prefix(slot.cached, context), len(context) - 1)
        if keep < len(slot.cached):
            self._decoder.forget(slot.seq, keep)
            del slot.cached[keep:]
        slot.todo = context[keep:]
        slot.sampler, slot.request = request.sampler, None
        slot.next = None
        slot.order = next(self._order)

    def _sample(self, outputs: list[tuple[Slot, int, int]]) -> None:
        ctx = self._decoder.ctx
        for slot, index, decode in outputs:
            if slot.decodes != decode or slot.sampler is None:
                continue  # the window ended while its token was decoded
            try:
                sampled = slot.sampler.sample(ctx, index)
            except Exception as exc:  # this sequence's sampler or logprobs: its job alone
                log.exception("engine: sampling sequence %d failed", slot.seq)
                self._end_with(slot, GenerationError(f"sampling: {type(exc).__name__}: {exc}"))
                continue
            slot.next = sampled.token
            slot.out.append(sampled)
            slot.ready.notify()

    def _end_with(self, slot: Slot, exc: GenerationError) -> None:
        """End the slot's window with an error for its job (under the lock). Its cache stays:
        the decode that filled it succeeded."""
        slot.out.append(exc)
        slot.next, slot.todo = None, []
        slot.ready.notify()

    def _failed(self, exc: GenerationError) -> None:
        """A step failed before its sampling (building or decoding the batch): every running
        window ends with the error, and every cache is dropped. llama_decode answers for the
        whole batch, not per sequence, and a failed one may have stored some of its ubatches
        in the KV cache and not others: no sequence's cache is known to match its tokens, so
        none is kept, and no window goes on from one. (A sampler's error is one sequence's,
        and ends that window alone: `_sample`.)"""
        log.error("engine: %s", exc)
        self._decoder.clear_batch()
        with self._lock:
            for slot in self._slots:
                if slot.sampler is not None:
                    self._end_with(slot, exc)
                self._decoder.forget(slot.seq, 0)
                slot.cached.clear()
