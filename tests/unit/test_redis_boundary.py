"""Redis only through the store: no product module outside common/store/, common/adapters/
and common/connection.py calls a Redis client method.

What it covers: every call `<expr>.<name>(...)` in genq's common/, producer/ and workers/
(outside those three) whose <name> is a public method of redis-py's clients, pipelines or
pub/sub objects, sync or async (`hgetall`, `xadd`, `pipeline`, `publish`, `pubsub`,
`execute_command`, ... : read from redis-py itself, so a new command is covered once redis-py
has it). Left out are the names that are also methods of Python's own types (`get`, `set`,
`keys`, `close`, `exists`, `append`, ...: `dict.get` is no Redis call) and the few listed in
NOT_REDIS, which genq's other libraries use (`click.echo`, a router's `delete`,
`time.time`, ...). A call
on a store module (`channels.publish(...)`, `jobs.exists(...)`) builds a store command and is
allowed, as is `self.<name>()` where the module defines <name> itself. What it cannot see: a
Redis call under one of the left-out names (`client.get(key)`), or through getattr.
"""

from __future__ import annotations

import ast
import asyncio
import io
import logging
import pathlib
import socket
import subprocess
import threading
from collections.abc import Iterator

import redis
import redis.asyncio
import redis.asyncio.client
import redis.client

ROOT = pathlib.Path(__file__).resolve().parents[2]
PRODUCT = ("common", "producer", "workers")
STORE = ("common/store/", "common/adapters/", "common/connection.py")
STORE_PACKAGE = "genq.common.store"


def _public(kind: type) -> set[str]:
    return {name for name in dir(kind) if not name.startswith("_")}


_REDIS_KINDS = (
    redis.Redis,
    redis.asyncio.Redis,
    redis.client.Pipeline,
    redis.client.PubSub,
    redis.asyncio.client.Pipeline,
    redis.asyncio.client.PubSub,
)
_PYTHON_KINDS = (
    dict, list, set, frozenset, str, bytes, int, float, tuple, object,
    threading.Event, threading.Condition, threading.Thread, type(threading.Lock()),
    asyncio.Event, asyncio.Queue, asyncio.Task, pathlib.Path, socket.socket,
    subprocess.Popen, logging.Logger, io.TextIOWrapper, io.BytesIO,
)  # fmt: skip
# Names of Redis methods that genq's other libraries use too: click's `command` and `echo`, a
# FastAPI router's `delete`, hashlib's `digest`, an async generator's `aclose`, kombu's
# queues' `select`, the time module's `time`.
NOT_REDIS = frozenset({"command", "echo", "delete", "digest", "aclose", "select", "time"})
REDIS_METHODS = (
    frozenset().union(*map(_public, _REDIS_KINDS))
    - frozenset().union(*map(_public, _PYTHON_KINDS))
    - NOT_REDIS
)


def _store_names(tree: ast.Module) -> set[str]:
    """The names a module binds to store modules (`from genq.common.store import jobs`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(STORE_PACKAGE):
            names |= {alias.asname or alias.name for alias in node.names}
    return names


def _defined(tree: ast.Module) -> set[str]:
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def redis_calls(source: str) -> Iterator[tuple[int, str]]:
    """(line, call) of each Redis client method called in `source`."""
    tree = ast.parse(source)
    store, own = _store_names(tree), _defined(tree)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, receiver = node.func.attr, node.func.value
        if name not in REDIS_METHODS:
            continue
        if isinstance(receiver, ast.Name) and (
            receiver.id in store or (receiver.id in {"self", "cls"} and name in own)
        ):
            continue
        yield node.lineno, ast.unparse(node.func)


def product_files() -> Iterator[pathlib.Path]:
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith(STORE):
                yield path


def test_no_product_module_outside_the_store_calls_a_redis_client_method() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {call}"
        for path in product_files()
        for line, call in redis_calls(path.read_text())
    ]
    assert found == [], "Redis calls outside common/store:\n" + "\n".join(found)


def test_the_walk_covers_the_product_outside_the_store() -> None:
    walked = {path.relative_to(ROOT).as_posix() for path in product_files()}
    assert {"producer/client.py", "workers/relay/service.py", "common/schemas.py"} <= walked
    assert not any(path.startswith(STORE) for path in walked)


def test_raw_redis_calls_are_caught() -> None:
    source = """
pipe = r.pipeline(transaction=False)
pipe.publish(channel, frame)
client.redis.hgetall(key)
r.xadd(key, {"f": frame})
self._redis.pubsub(ignore_subscribe_messages=True)
r.execute_command("XLEN", key)
"""
    assert [call for _, call in redis_calls(source)] == [
        "r.pipeline",
        "pipe.publish",
        "client.redis.hgetall",
        "r.xadd",
        "self._redis.pubsub",
        "r.execute_command",
    ]


def test_python_methods_and_store_commands_are_not_redis_calls() -> None:
    source = """
from genq.common.store import channels, jobs as job_store
fields.get("f")
names.keys()
channels.publish(channel, frame)
job_store.exists(keys, job_id)
click.echo(text)

class Relay:
    def expire(self) -> None: ...
    def turn(self) -> None:
        self.expire()
"""
    assert list(redis_calls(source)) == []
