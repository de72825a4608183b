"""`Command`: Redis calls and the pure decoding of their replies, run by `run` (sync) or
`arun` (async); several commands by `run_all`/`arun_all` in one pipeline, or by
`run_transaction`/`arun_transaction` in one MULTI/EXEC (all applied, or none). Commands do no
I/O, so that both faces share them and unit tests can check their calls and decoding without
Redis."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio

T = TypeVar("T")

Call = tuple[Any, ...]  # one Redis command as its arguments, e.g. ("HGETALL", key)


@dataclass(frozen=True)
class Command(Generic[T]):
    """The calls to make (in order, in one pipeline) and how their replies become a `T`.

    Replies are those of redis-py's pipeline on a client with `decode_responses=True`: its
    response callbacks apply, so HGETALL gives a dict and EXISTS an int."""

    calls: tuple[Call, ...]
    decode: Callable[[list[Any]], T]

    def reply(self, replies: Sequence[Any]) -> T:
        """Decode this command's replies (as many as it has calls)."""
        return self.decode(list(replies))


def _queue(pipe: Any, *commands: Command[Any]) -> None:
    """Add commands' calls to a pipeline of either face."""
    for command in commands:
        for call in command.calls:
            pipe.execute_command(*call)


def _split(commands: Sequence[Command[Any]], replies: Sequence[Any]) -> list[Any]:
    # Replies come with raise_on_error=False: Redis's refusal is raised as it would be without a
    # pipeline, not wrapped in redis-py's "Command # n (...) of pipeline caused error".
    for reply in replies:
        if isinstance(reply, redis.ResponseError):
            raise reply
    out, at = [], 0
    for command in commands:
        size = len(command.calls)
        out.append(command.reply(replies[at : at + size]))
        at += size
    return out


def run(client: redis.Redis, command: Command[T]) -> T:
    """Execute one command on a sync client. A command of one call is sent without a
    pipeline (the same reply, its callbacks applied alike): a lease heartbeat or a claim is a
    plain round trip, not a pipeline's."""
    if len(command.calls) == 1:
        reply = client.execute_command(*command.calls[0])  # type: ignore[no-untyped-call]
        return command.reply([reply])
    result: T = run_all(client, [command])[0]
    return result


def run_all(client: redis.Redis, commands: Sequence[Command[Any]]) -> list[Any]:
    """Execute several commands in one pipeline (not a transaction); their values in order."""
    return _run_pipeline(client, commands, transaction=False)


def run_transaction(client: redis.Redis, commands: Sequence[Command[Any]]) -> list[Any]:
    """Execute several commands as one transaction (MULTI/EXEC, one round trip): another
    client sees all their writes or none. Their values in order."""
    return _run_pipeline(client, commands, transaction=True)


def _run_pipeline(
    client: redis.Redis, commands: Sequence[Command[Any]], transaction: bool
) -> list[Any]:
    pipe = client.pipeline(transaction=transaction)
    _queue(pipe, *commands)
    return _split(commands, pipe.execute(raise_on_error=False))


async def arun(client: redis.asyncio.Redis, command: Command[T]) -> T:
    """Execute one command on an async client (one call without a pipeline, as `run`)."""
    if len(command.calls) == 1:
        reply = await client.execute_command(*command.calls[0])  # type: ignore[no-untyped-call]
        return command.reply([reply])
    result: T = (await arun_all(client, [command]))[0]
    return result


async def arun_all(client: redis.asyncio.Redis, commands: Sequence[Command[Any]]) -> list[Any]:
    """The async face of `run_all`."""
    return await _arun_pipeline(client, commands, transaction=False)


async def arun_transaction(
    client: redis.asyncio.Redis, commands: Sequence[Command[Any]]
) -> list[Any]:
    """The async face of `run_transaction`."""
    return await _arun_pipeline(client, commands, transaction=True)


async def _arun_pipeline(
    client: redis.asyncio.Redis, commands: Sequence[Command[Any]], transaction: bool
) -> list[Any]:
    pipe = client.pipeline(transaction=transaction)
    _queue(pipe, *commands)
    return _split(commands, await pipe.execute(raise_on_error=False))
