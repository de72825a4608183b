"""One core, two faces: the sync and async clients share an I/O-free core (producer/core.py,
reading.py, waiting.py, submitter.py), and what each face writes again for itself stays thin.

The rule, measured on the source: no hand-mirrored pair of functions is longer than 10 lines.
A pair is a sync function and its async twin, found by name: the same method of `X` and
`AsyncX` (spelled the async way where it differs: `close`/`aclose`, `__next__`/`__anext__`),
or `f` beside `af`/`f_async` in one module or class. Every such pair counts as mirrored,
whether or not its bodies are the same modulo `await` (a twin that differs only where the
async face runs a blocking call in a thread is mirrored all the same); the test also shows
which pairs are the same, so that the rule is seen to bite where it is meant to.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import genq
from tests.unit.test_public_api import ASYNC_SPELLING as METHOD_SPELLING

PRODUCER = Path(genq.__file__).parent / "producer"
MAX_LINES = 10
# The async spelling of a sync name, where it is not the same name: the faces' methods (as the
# parity test spells them) and what their bodies call.
ASYNC_SPELLING = {
    **METHOD_SPELLING,
    "StopIteration": "StopAsyncIteration",
    "Iterator": "AsyncIterator",
    "run": "arun",
}
SYNC_SPELLING = {value: key for key, value in ASYNC_SPELLING.items()}

Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class Twin:
    sync: str  # qualified name, e.g. "client.Client.submit"
    async_: str
    lines: int  # the longer body's, its docstring aside
    same: bool  # the bodies are the same modulo await/async spelling


def statements(function: Function) -> list[ast.stmt]:
    """The function's body, its docstring aside (a docstring is not code)."""
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        return body[1:] or body
    return body


def body_lines(function: Function) -> int:
    body = statements(function)
    end = body[-1].end_lineno or body[-1].lineno
    return end - body[0].lineno + 1


def async_names(name: str) -> set[str]:
    return {ASYNC_SPELLING.get(name, name), f"a{name}", f"{name}_async", f"Async{name}"}


def async_class(name: str) -> str:
    """`AsyncX` for `X`, `_AsyncX` for `_X`."""
    return f"_Async{name[1:]}" if name.startswith("_") else f"Async{name}"


def sync_name(name: str) -> str:
    """The sync spelling of a name in an async body."""
    if name in SYNC_SPELLING:
        return SYNC_SPELLING[name]
    if name.startswith("Async") and name != "Async":
        return name.removeprefix("Async")
    if name.endswith("_async"):
        return name.removesuffix("_async")
    return name


class _Desync(ast.NodeTransformer):
    """An async body as its sync twin would read: no `await`, `async for` or `async with`,
    and every name spelled the sync way."""

    def visit_Await(self, node: ast.Await) -> ast.AST:
        value: ast.AST = self.visit(node.value)
        return value

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        self.generic_visit(node)
        return ast.For(node.target, node.iter, node.body, node.orelse, node.type_comment)

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        self.generic_visit(node)
        return ast.With(node.items, node.body, node.type_comment)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Name(sync_name(node.id), node.ctx)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        return ast.Attribute(node.value, sync_name(node.attr), node.ctx)


def code(function: Function) -> str:
    """The body as its sync twin would spell it, for comparing."""
    body = copy.deepcopy(statements(function))  # the transformer rewrites what it visits
    tree = _Desync().visit(ast.Module(body=body, type_ignores=[]))
    return ast.dump(tree)


def functions(scope: ast.Module | ast.ClassDef) -> dict[str, Function]:
    return {node.name: node for node in scope.body if isinstance(node, Function)}


def scope_twins(
    prefix: tuple[str, str], sync_scope: dict[str, Function], async_scope: dict[str, Function]
) -> Iterator[tuple[str, Function, str, Function]]:
    """Each sync function of a scope with its async twin in the other (or the same) scope."""
    for name, function in sync_scope.items():
        twin_names = async_names(name) - ({name} if sync_scope is async_scope else set())
        for twin_name in sorted(twin_names & set(async_scope)):
            twin = async_scope[twin_name]
            yield f"{prefix[0]}.{name}", function, f"{prefix[1]}.{twin_name}", twin


def module_twins(source: str, module: str) -> list[Twin]:
    tree = ast.parse(source)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    top = functions(tree)
    scopes = [((module, module), top, top)]
    for name, cls in classes.items():
        own = functions(cls)
        scopes.append(((f"{module}.{name}", f"{module}.{name}"), own, own))
        twin = async_class(name)
        if twin in classes:
            scopes.append(((f"{module}.{name}", f"{module}.{twin}"), own, functions(classes[twin])))
    return [
        Twin(sync_name_, async_name_, max(body_lines(a), body_lines(b)), code(a) == code(b))
        for prefix, sync_scope, async_scope in scopes
        for sync_name_, a, async_name_, b in scope_twins(prefix, sync_scope, async_scope)
    ]


def producer_twins() -> list[Twin]:
    twins = []
    for path in sorted(PRODUCER.glob("*.py")):
        twins += module_twins(path.read_text(), path.stem)
    return twins


def test_the_faces_are_found() -> None:
    """The pairing finds the client, handle, stream and listener faces it is meant to measure
    (so that the rule below cannot pass by finding nothing)."""
    found = {(twin.sync, twin.async_) for twin in producer_twins()}
    assert {
        ("client.Client.submit", "client.AsyncClient.submit"),
        ("client.Client.stream_many", "client.AsyncClient.stream_many"),
        ("handles.JobHandle.result", "handles.AsyncJobHandle.result"),
        ("streams.JobStream.__next__", "streams.AsyncJobStream.__anext__"),
        ("batches.BatchHandle.results", "batches.AsyncBatchHandle.results"),
        ("listeners.Listener.wait", "listeners.AsyncListener.wait"),
        ("listeners._drain", "listeners._drain_async"),
        ("submitter.Submitter.cancel", "submitter.Submitter.acancel"),
        ("transport.Transport.read", "transport.AsyncTransport.read"),
    } <= found


def test_most_pairs_are_the_same_modulo_await() -> None:
    """The faces are mirrors: most pairs differ only by `await` and the async spelling."""
    twins = producer_twins()
    same = [twin for twin in twins if twin.same]
    assert len(same) * 2 > len(twins)
    assert ("transport.Transport.read", "transport.AsyncTransport.read") in {
        (twin.sync, twin.async_) for twin in same
    }


@pytest.mark.parametrize("twin", producer_twins(), ids=lambda twin: twin.sync)
def test_no_hand_mirrored_pair_is_longer_than_10_lines(twin: Twin) -> None:
    assert twin.lines <= MAX_LINES, (
        f"{twin.sync} and {twin.async_} mirror {twin.lines} lines by hand: move what they "
        "share into the I/O-free core (producer/core.py, reading.py, waiting.py)"
    )


MIRRORED = (
    '''
class Reader:
    def read(self) -> int:
        """A docstring is not counted."""
        total = 0
'''
    + "        total += self.one()\n" * 10
    + """        return total


class AsyncReader:
    async def read(self) -> int:
        total = 0
"""
    + "        total += await self.one()\n" * 10
    + """        return total
"""
)


def test_the_rule_catches_a_long_mirrored_pair() -> None:
    (twin,) = module_twins(MIRRORED, "example")
    assert (twin.sync, twin.async_) == ("example.Reader.read", "example.AsyncReader.read")
    assert twin.same
    assert twin.lines == 12
