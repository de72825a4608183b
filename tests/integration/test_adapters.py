"""Contracts of the borrowed internals that need a service (genq.common.adapters): redis-py's
hiredis reader against a real redis-server, llama-cpp-python's vocabulary against the tiny
model. Each fails loudly when an upgrade moves the internal; each fallback is held to the
same answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from llama_cpp import Llama

from genq.common.adapters import llama_vocab
from genq.common.adapters.redis_replies import Replies, hiredis_reader, identity_sentinel
from genq.common.settings import Settings


@pytest.fixture
def connection(settings: Settings) -> Iterator[redis.connection.Connection]:
    client = redis.Redis.from_url(settings.redis_url)
    conn = client.connection_pool.get_connection()
    yield conn
    conn.disconnect()  # type: ignore[no-untyped-call]
    client.close()


def test_redis_py_still_keeps_its_hiredis_reader_where_the_relay_borrows_it(
    connection: redis.connection.Connection,
) -> None:
    found = hiredis_reader(connection)
    assert found is not None, "redis-py moved _parser._reader: see adapter"
    assert Replies(connection).fast
    # The C drain stops at redis-py's sentinel: it must be the one this reader returns.
    assert identity_sentinel() is not None, "redis-py moved NOT_ENOUGH_DATA: see adapter"
    assert found[1].gets() is identity_sentinel()


@pytest.mark.parametrize("fast", [True, False], ids=["hiredis", "fallback"])
def test_replies_come_in_order_with_errors_as_values(
    connection: redis.connection.Connection, fast: bool
) -> None:
    replies = Replies(connection, fast=fast)
    assert replies.fast is fast
    commands = [b"*3\r\n$3\r\nSET\r\n$6\r\nadapt1\r\n$1\r\nx\r\n", b"*1\r\n$5\r\nNOSUCH\r\n"]
    commands.append(b"*2\r\n$3\r\nGET\r\n$6\r\nadapt1\r\n")
    assert replies.available(0.0, 10) == []  # nothing sent, nothing waited for
    connection.send_packed_command([b"".join(commands)], check_health=False)  # type: ignore[no-untyped-call]
    ok, error, value = replies.take(3)
    assert ok in (b"OK", "OK", True)
    assert isinstance(error, redis.ResponseError) and "unknown command" in str(error)
    assert value == b"x"
    connection.send_packed_command([commands[2] * 2], check_health=False)  # type: ignore[no-untyped-call]
    got: list[object] = []
    while len(got) < 2:
        got += replies.available(5.0, 10)
    assert got == [b"x", b"x"]


@pytest.mark.parametrize("fast", [True, False], ids=["hiredis", "fallback"])
def test_replies_that_look_false_are_replies_too(
    connection: redis.connection.Connection, fast: bool
) -> None:
    """0 equals False (hiredis's default sentinel); an empty list and nil are falsy: none of
    them may end a drain early."""
    replies = Replies(connection, fast=fast)
    exists = b"*2\r\n$6\r\nEXISTS\r\n$7\r\nadapt-0\r\n"
    lrange = b"*4\r\n$6\r\nLRANGE\r\n$7\r\nadapt-0\r\n$1\r\n0\r\n$1\r\n1\r\n"
    get = b"*2\r\n$3\r\nGET\r\n$7\r\nadapt-0\r\n"
    connection.send_packed_command([exists + lrange + get + exists], check_health=False)  # type: ignore[no-untyped-call]
    assert replies.take(4) == [0, [], None, 0]


@pytest.fixture(scope="module")
def tiny(tiny_vocab: Llama) -> Llama:
    return tiny_vocab


def test_llama_cpp_python_still_keeps_the_vocab_where_genq_borrows_it(tiny: Llama) -> None:
    assert llama_vocab.vocab_of(tiny) is not None, "llama-cpp-python moved Llama._model.vocab"


@pytest.mark.parametrize("borrow", [True, False], ids=["vocab", "fallback"])
def test_eos_ends_generation_and_an_ordinary_token_does_not(tiny: Llama, borrow: bool) -> None:
    is_end = llama_vocab.end_check(tiny, borrow=borrow)
    eos = tiny.token_eos()
    ordinary = next(t for t in range(tiny.n_vocab()) if t not in (eos, tiny.token_bos()))
    assert is_end(eos)
    assert not is_end(ordinary)
