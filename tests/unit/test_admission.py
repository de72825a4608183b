"""workers.celery.admission: a job starts only on a free slot of its model's queue; the worker hears
when a queue fills and when it frees, so that it consumes only queues with a free slot."""

from __future__ import annotations

import threading

from genq.workers.celery.admission import Admission


def test_a_queue_admits_its_slots_and_one_more_after_a_release() -> None:
    admission = Admission({"cpu.one": 1, "cpu.four": 4})
    assert admission.reserve("cpu.one")
    assert not admission.reserve("cpu.one")
    assert all(admission.reserve("cpu.four") for _ in range(4))
    assert not admission.reserve("cpu.four")
    assert admission.full() == {"cpu.one", "cpu.four"}
    admission.release("cpu.four")
    assert admission.full() == {"cpu.one"}
    assert admission.reserve("cpu.four")


def test_a_queue_the_worker_does_not_serve_is_not_metered() -> None:
    admission = Admission({"cpu.one": 1})
    assert all(admission.reserve("cpu.other") for _ in range(3))
    assert admission.reserve(None)  # a message without delivery info
    admission.release("cpu.other")
    assert admission.full() == frozenset()


def test_of_many_threads_racing_for_one_free_slot_exactly_one_gets_it() -> None:
    admission = Admission({"cpu.one": 1})
    start = threading.Barrier(16)
    admitted: list[bool] = []

    def race() -> None:
        start.wait(timeout=10)
        admitted.append(admission.reserve("cpu.one"))

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(admitted) == [False] * 15 + [True]


def test_the_worker_hears_when_a_queue_fills_is_refused_and_frees() -> None:
    admission = Admission({"cpu.two": 2})
    heard: list[frozenset[str]] = []
    admission.listen(lambda: heard.append(admission.full()))
    admission.reserve("cpu.two")
    assert heard == []  # a slot is still free: nothing to change
    admission.reserve("cpu.two")
    admission.reserve("cpu.two")  # refused: still full
    admission.release("cpu.two")
    admission.release("cpu.two")
    assert heard == [{"cpu.two"}, {"cpu.two"}, frozenset()]
