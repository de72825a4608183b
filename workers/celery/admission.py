"""Admission: a job starts in a worker process only when its model has a free slot there.

A worker's pool runs as many tasks at once as its largest model has slots (genq.common.routing),
so a model with fewer could be handed more jobs than it runs. Such a job must not wait in a
thread of this worker holding a lease: it waits in its model's queue, in priority order, where
any worker can take it. So:

- a task reserves a slot of its message's queue (one queue per model) before it claims its
  jobs (`Admission.reserve`, under one lock: two threads never take one free slot), and gives
  it back when its jobs have ended, or at once when the claim found nothing to run;
- a task that finds every slot taken gives its message back to the queue as it is (Celery's
  `Reject(requeue=True)`): nothing claimed, no epoch bumped;
- the worker stops consuming a queue while its model is full and consumes it again when a
  slot frees (`QueueGate`, a bootstep of Celery's consumer), so such messages are rare: only
  one that the consumer took while the slot was being reserved.

The consumer's queues are changed on the consumer's own thread only (kombu's channel is not
thread-safe). A task thread asks for it with `Consumer.call_soon`, which kombu's event loop
takes from any thread (under a lock since kombu 5.3, waking the loop at once since 5.7); the
gate then makes the consumed queues match the full models as they are at that moment, so
requests that run late or in another order than they were made still end in the right state.
Celery's remote control (`app.control.cancel_consumer` / `add_consumer`) was not used: it does
the same `call_soon` in the worker, after a round trip through Redis pub/sub, which delivers at
most once (a broadcast lost in a reconnect would leave a queue paused with free slots), and a
pause and a resume sent by two threads on two connections may arrive in either order.

With Celery's prefork pool (every model one slot) each child process runs one task at a time,
so it always finds its model's slot free; the children have no consumer, and only the main
process's gate (`listen`, which remembers the process) changes what the worker consumes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from celery import bootsteps

log = logging.getLogger(__name__)


class Admission:
    """A worker process's free slots, per queue (its model's `slots`, genq.common.routing)."""

    def __init__(self, slots: Mapping[str, int]) -> None:
        self.slots = dict(slots)
        self._held = dict.fromkeys(self.slots, 0)
        self._lock = threading.Lock()
        self._on_change: Callable[[], None] | None = None
        self._listener_pid = 0

    def reserve(self, queue: str | None) -> bool:
        """Take a slot of the queue's model; False when every one is taken. A queue this
        worker does not serve (a `-Q` of another's) is not metered: True, and nothing held."""
        if queue not in self.slots:
            return True
        with self._lock:
            held = self._held[queue]
            admitted = held < self.slots[queue]
            if admitted:
                self._held[queue] = held = held + 1
            full = held >= self.slots[queue]
        if full:  # the last slot taken, or a message that came in anyway: stop consuming
            self._changed()
        return admitted

    def release(self, queue: str | None) -> None:
        """Give back a slot `reserve` took."""
        if queue not in self.slots:
            return
        with self._lock:
            was_full = self._held[queue] >= self.slots[queue]
            self._held[queue] -= 1
        if was_full:
            self._changed()

    def full(self) -> frozenset[str]:
        """The queues whose every slot is taken."""
        with self._lock:
            return frozenset(q for q, held in self._held.items() if held >= self.slots[q])

    def listen(self, on_change: Callable[[], None] | None) -> None:
        """Call `on_change` (from any thread) when a queue fills or frees, in this process
        only: a prefork child, which inherits this object, must not touch its parent's
        consumer."""
        self._on_change, self._listener_pid = on_change, os.getpid()

    def _changed(self) -> None:
        on_change = self._on_change
        if on_change is not None and self._listener_pid == os.getpid():
            on_change()


class QueueGate(bootsteps.StartStopStep):  # type: ignore[misc]
    """A step of Celery's consumer: consume a model's queue only while the model has a free
    slot in this process (the app's `genq_admission`)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._consumer: Any = None
        self._paused: set[str] = set()  # queues this gate stopped consuming

    def start(self, parent: Any) -> None:
        admission: Admission | None = getattr(parent.app, "genq_admission", None)
        if admission is None:
            return
        self._consumer = parent
        # Also after a reconnect, when Celery rebuilt its task consumer (paused queues stay
        # out of it: cancel_task_queue deselects them).
        admission.listen(lambda: parent.call_soon(self.reconcile, admission))
        self.reconcile(admission)

    def stop(self, parent: Any) -> None:
        self._consumer = None  # shutting down or reconnecting: change nothing meanwhile

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)

    def reconcile(self, admission: Admission) -> None:
        """Consume the queues that have a free slot, not the others (on the consumer's
        thread)."""
        consumer = self._consumer
        if consumer is None or consumer.task_consumer is None:
            return
        full = admission.full()
        for queue in sorted(full - self._paused):
            if consumer.task_consumer.consuming_from(queue):
                consumer.cancel_task_queue(queue)
                self._paused.add(queue)
        for queue in sorted(self._paused - full):
            consumer.add_task_queue(queue)
            self._paused.discard(queue)
