"""The public surface of `producer` is exactly its `__all__` (as httpx tests its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import producer


def test_all_has_no_duplicates() -> None:
    assert len(producer.__all__) == len(set(producer.__all__))


def test_public_names_are_exactly_all() -> None:
    public = {
        name
        for name, value in vars(producer).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public == set(producer.__all__)


@pytest.mark.parametrize("name", producer.__all__)
def test_every_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from producer import {name}", namespace)
    assert namespace[name] is getattr(producer, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from producer import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(producer.__all__)


def test_importing_producer_loads_no_worker_or_model_runtime() -> None:
    """A producer machine needs neither the workers package nor llama-cpp-python."""
    probe = (
        "import sys, producer; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'workers', 'llama_cpp'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(producer.__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"
