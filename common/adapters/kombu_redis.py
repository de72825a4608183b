"""kombu's Redis transport, with a channel that closes cleanly after its connection is gone.

Why: when Redis dies under a running worker, Celery's consumer collects the broken broker
connection (which detaches the transport from it: `transport.client = None`) and then closes
it. Closing the default channel restores its unacked messages, which asks the channel for a
new Redis client, whose parameters are read off `transport.client`: an AttributeError, which
neither kombu's `maybe_close_channel` nor Celery's `ignore_errors` expects, so the worker
stopped with "Unrecoverable error: AttributeError: 'NoneType' object has no attribute
'hostname'" (kombu 5.7, celery 5.7) instead of reconnecting.

Mended here: with its transport detached, the channel's `_connparams` raises redis-py's
ConnectionError, one of the transport's `connection_errors`. Closing then carries on as for
any lost connection, the consumer reconnects, and the unacked messages stay in kombu's
unacked hash (restored after the visibility timeout; genq's own leases resume the jobs
sooner, through the relay).

The same for kombu's Sentinel transport (a GENQ_REDIS_URL of redis+sentinel://, spelled
`sentinel://…;sentinel://…` for kombu by genq.common.celery_config), whose channel is a Redis
channel too.

Installed under kombu's own names (`install`): `redis`, `rediss` and `sentinel` name these
transports in a genq process, so a broker URL keeps its scheme. (Celery's `broker_transport`
setting, naming the class by path, made kombu write that path as the URL's scheme: Flower,
which picks its broker client by scheme, then answered its broker page with "broker is not
supported".)

Borrowed: `kombu.transport.redis.Channel._connparams(asynchronous=False)` (and
`SentinelChannel`'s, the same method), which every new
client and pool of a channel is built from; `Transport.Channel`; kombu's alias table
`kombu.transport.TRANSPORT_ALIASES` and its cache of resolved names `_transport_cache`.
Fallback (the method gone): the subclass changes nothing and kombu behaves as it does.
Contract: tests/unit/test_adapters.py detaches a channel's transport as Celery does and checks
the ConnectionError, and checks a genq Celery app's connection is this transport under its
`redis://` URL; tests/faults/test_redis_restart.py kills Redis under running jobs;
tests/integration/test_flower.py reads Flower's broker page.
"""

from __future__ import annotations

from typing import Any

import kombu.transport
import redis
from kombu.transport import redis as kombu_redis

# The URL schemes genq's transports serve (kombu's own names), each with its class by kombu's
# "module:Class" path.
TRANSPORTS = {
    "redis": f"{__name__}:Transport",
    "rediss": f"{__name__}:Transport",
    "sentinel": f"{__name__}:SentinelTransport",
}


def _connparams(channel: Any, asynchronous: bool, parent: Any) -> dict[str, Any]:
    """kombu's `_connparams` of `parent`, or ConnectionError once the transport is detached."""
    if channel.connection.client is None:
        raise redis.ConnectionError("the broker connection is closed")
    params: dict[str, Any] = parent._connparams(asynchronous=asynchronous)
    return params


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, refusing to connect once its transport is detached."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        return _connparams(self, asynchronous, super())


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with genq's channel."""

    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (a Redis channel whose pool asks Sentinels for the primary),
    refusing to connect once its transport is detached."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        return _connparams(self, asynchronous, super())


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with genq's channel."""

    Channel = SentinelChannel


def install() -> None:
    """From now on, in this process, kombu's `redis`, `rediss` and `sentinel` are genq's
    transports. Idempotent; a name kombu resolved before is resolved again."""
    for scheme, transport in TRANSPORTS.items():
        kombu.transport.TRANSPORT_ALIASES[scheme] = transport
        kombu.transport._transport_cache.pop(scheme, None)
