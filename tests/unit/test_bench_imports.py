"""ops/bench drives genq as a user does: the public face (`genq`), settings, the model
registry (model paths), the documented wire protocol (`genq.common.frames`: what a worker
publishes and a reader reads) and the tiny model's maker. Worker internals, the store and
every other module are out: a baseline that imports them measures genq against itself."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "ops" / "bench"
ALLOWED = {
    "genq",
    "genq.common.settings",
    "genq.common.registry",
    "genq.common.gemma",
    "genq.common.tinymodel",
    "genq.common.frames",
}


def _genq_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found.add(node.module if node.module != "genq.common" else names[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "genq" or name.startswith("genq.")}


def test_bench_imports_only_what_a_user_may() -> None:
    used = {f"{p.name}: {m}" for p in BENCH.glob("*.py") for m in _genq_imports(p)}
    assert used, "ops/bench imports genq somewhere"
    assert {u for u in used if u.split(": ")[1] not in ALLOWED} == set()
