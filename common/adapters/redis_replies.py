"""Replies read off a redis-py connection in bulk: the relay's hot path.

Borrowed: redis-py's hiredis parser, `connection._parser` (`read_from_socket(timeout,
raise_on_timeout)`) and its `hiredis.Reader` (`_parser._reader.gets()`), as in redis-py 5 to
8. Taking replies straight off the reader skips redis-py's layers per reply (several Python
calls, and in redis-py 8 a debug-log string formatted for each even with debug logging off),
which cap a relay near 20k frames/s. Where the reader's "not enough data" sentinel is redis-py's
own plain object (`redis._parsers.hiredis.NOT_ENOUGH_DATA`, redis-py 5 to 8), replies are
drained by C loops (`iter(gets, sentinel)`): no Python bytecode per reply. A sentinel that
compares equal to a reply (hiredis's default, False, equals the integer reply 0) would stop
such a loop early and lose that reply, so any other sentinel gets the Python loop.

Fallback (any other parser, or the internal gone): the connection's public `can_read` and
`read_response`, the same replies, slower. Error replies are returned as values
(redis.ResponseError) on both paths; a lost connection raises redis.ConnectionError.
Contract: tests/unit/test_adapters.py.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import redis
from redis.connection import AbstractConnection

try:  # the sentinel redis-py gives its hiredis reader
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
except ImportError:  # pragma: no cover - redis-py moved it: the Python loop
    _NOT_ENOUGH_DATA = False


def hiredis_reader(connection: AbstractConnection) -> tuple[Any, Any] | None:
    """The connection's (parser, hiredis reader) when redis-py still has them where genq
    borrows them from; None otherwise. Valid until the connection reconnects."""
    parser = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if callable(getattr(parser, "read_from_socket", None)) and callable(
        getattr(reader, "gets", None)
    ):
        return parser, reader
    return None


def identity_sentinel() -> object | None:
    """redis-py's "not enough data" sentinel when only itself compares equal to it (a plain
    object): then `iter(gets, sentinel)` stops at it and at no reply."""
    return _NOT_ENOUGH_DATA if type(_NOT_ENOUGH_DATA) is object else None


class Replies:
    """The replies arriving on one connected redis-py connection, in order."""

    def __init__(self, connection: AbstractConnection, fast: bool = True) -> None:
        self._connection = connection
        found = hiredis_reader(connection) if fast else None
        self._parser: Any = found[0] if found else None
        self._reader: Any = found[1] if found else None
        self._sentinel = identity_sentinel()

    @property
    def fast(self) -> bool:
        return self._reader is not None

    def available(self, wait_s: float, limit: int) -> list[Any]:
        """The replies that have arrived, at most `limit`, waiting up to `wait_s` for one."""
        if self._reader is None:
            return self._available_slowly(wait_s, limit)
        out: list[Any] = []
        self._drain(out, limit)
        if not out and self._parser.read_from_socket(timeout=wait_s, raise_on_timeout=False):
            self._drain(out, limit)
        while len(out) < limit and self._parser.read_from_socket(timeout=0, raise_on_timeout=False):
            self._drain(out, limit)
        return out

    def take(self, count: int) -> list[Any]:
        """The next `count` replies, waiting for them (up to the socket's timeout each)."""
        if self._reader is None:
            return [self._one() for _ in range(count)]
        out: list[Any] = []
        self._drain(out, count)
        while len(out) < count:
            self._parser.read_from_socket()
            self._drain(out, count)
        return out

    def _drain(self, out: list[Any], limit: int) -> None:
        gets = self._reader.gets
        if self._sentinel is not None:  # the replies buffered, up to the limit, in C
            out.extend(islice(iter(gets, self._sentinel), limit - len(out)))
            return
        append = out.append
        for _ in range(limit - len(out)):
            reply = gets()
            if reply is False or type(reply) is object:  # hiredis's "not enough data" sentinel
                return
            append(reply)

    def _available_slowly(self, wait_s: float, limit: int) -> list[Any]:
        out: list[Any] = []
        ready = self._connection.can_read(timeout=wait_s)
        while ready and len(out) < limit:
            out.append(self._one())
            ready = self._connection.can_read(timeout=0)
        return out

    def _one(self) -> Any:
        try:
            return self._connection.read_response(disable_decoding=True)
        except redis.ResponseError as exc:  # an error reply: a value, as on the fast path
            return exc
