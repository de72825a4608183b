"""prometheus_client's choice of value class, made again once PROMETHEUS_MULTIPROC_DIR is set.

prometheus_client picks file-backed values (multiprocess mode) when the variable is set at its
first import; genq sets it later (a worker's private directory, workers.publishing.metrics),
after Celery may have imported prometheus_client. Borrowed: the module attribute
`values.ValueClass` and `values.get_value_class()` (prometheus_client 0.x), which every metric
reads when created.
Fallback (either gone): reloading `prometheus_client.values`, which runs the same choice at
its import. Contract: tests/unit/test_adapters.py.
"""

from __future__ import annotations

import importlib

from prometheus_client import values


def pick_value_class(borrow: bool = True) -> None:
    """Have metrics created from now on use the value class the environment asks for."""
    choose = getattr(values, "get_value_class", None)
    if borrow and callable(choose) and hasattr(values, "ValueClass"):
        values.ValueClass = choose()
    else:
        importlib.reload(values)
