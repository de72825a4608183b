"""The public surface of `genq` is exactly its `__all__` (as httpx tests its own)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import genq
from genq.producer.streams import AsyncJobStream, JobStream


def test_all_has_no_duplicates() -> None:
    assert len(genq.__all__) == len(set(genq.__all__))


def test_public_names_are_exactly_all() -> None:
    public = {
        name
        for name, value in vars(genq).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public == set(genq.__all__)


@pytest.mark.parametrize("name", genq.__all__)
def test_every_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from genq import {name}", namespace)
    assert namespace[name] is getattr(genq, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from genq import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(genq.__all__)


def test_importing_genq_loads_no_worker_or_model_runtime() -> None:
    """A producer machine needs neither the workers package nor llama-cpp-python."""
    probe = (
        "import sys, genq; "
        "print(sorted({'.'.join(m.split('.')[:2]) for m in sys.modules} & "
        "{'genq.workers', 'llama_cpp'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=Path(genq.__file__).parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"


# The sync and async faces: the same public names (the async spelling of closing and of the
# protocols aside) and the same parameters, so that code moves between them by adding `await`.
ASYNC_SPELLING = {
    "close": "aclose",
    "__enter__": "__aenter__",
    "__exit__": "__aexit__",
    "__iter__": "__aiter__",
    "__next__": "__anext__",
}
PROTOCOLS = set(ASYNC_SPELLING) | set(ASYNC_SPELLING.values())
# Returns at once on both faces: a stream is opened by reading it.
SYNC_ON_BOTH = {"stream"}
FACES = [
    (genq.Client, genq.AsyncClient),
    (genq.JobHandle, genq.AsyncJobHandle),
    (genq.BatchHandle, genq.AsyncBatchHandle),
    (JobStream, AsyncJobStream),
]


def surface(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_") or name in PROTOCOLS}


def async_name(name: str) -> str:
    return ASYNC_SPELLING.get(name, name)


def parameters(function: object) -> list[tuple[str, object, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize(("sync", "async_"), FACES, ids=lambda cls: cls.__name__)
def test_the_async_face_has_the_sync_faces_public_names(sync: type, async_: type) -> None:
    assert {async_name(name) for name in surface(sync)} == surface(async_)


@pytest.mark.parametrize(("sync", "async_"), FACES, ids=lambda cls: cls.__name__)
def test_each_async_method_takes_the_parameters_of_its_sync_twin(sync: type, async_: type) -> None:
    for name in surface(sync):
        sync_attr = inspect.getattr_static(sync, name)
        async_attr = inspect.getattr_static(async_, async_name(name))
        assert type(sync_attr) is type(async_attr), name  # property for property
        if inspect.isfunction(sync_attr) and name not in PROTOCOLS:
            assert parameters(sync_attr) == parameters(async_attr), name


@pytest.mark.parametrize(("sync", "async_"), FACES, ids=lambda cls: cls.__name__)
def test_every_async_method_that_may_wait_on_redis_is_awaited(sync: type, async_: type) -> None:
    for name in surface(async_) - SYNC_ON_BOTH - PROTOCOLS:
        attr = inspect.getattr_static(async_, name)
        shared = attr is inspect.getattr_static(sync, name)  # a base's, with no I/O
        if inspect.isfunction(attr) and not shared:
            awaited = inspect.iscoroutinefunction(attr) or inspect.isasyncgenfunction(attr)
            assert awaited, f"{async_.__name__}.{name}"
