"""The Sentinel form of GENQ_REDIS_URL, parsed once for every client genq makes.

    redis+sentinel://[[user]:password@]host:port[,host:port…]/<primary name>[/<db>][?…]
    rediss+sentinel://…   the same, TLS to Redis (the Sentinels are asked in plain TCP)

The hosts are Sentinels (port 26379 when left out); `<primary name>` is the name they
monitor the primary under (`sentinel monitor <name> …`); `<db>` defaults to 0. The user and
password are Redis's, as in a redis:// URL. Query parameters:

    sentinel_password=…   the Sentinels' own password (their `requirepass`), when they have one
    ssl_*                 TLS options for Redis, as in a rediss:// URL (ssl_ca_certs=…)

This module does no I/O: common/connection.py builds redis-py's clients from a `SentinelUrl`,
and common/celery_config.py spells it for kombu's Sentinel transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from redis.connection import URL_QUERY_ARGUMENT_PARSERS

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_PORT = 26379
SENTINEL_PASSWORD = "sentinel_password"


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed Sentinel URL. `options` are the query's Redis connection options, typed as
    redis-py types them (TLS options among them)."""

    sentinels: tuple[tuple[str, int], ...]
    primary: str
    db: int = 0
    tls: bool = False
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    options: dict[str, Any] = field(default_factory=dict)

    def redis_options(self) -> dict[str, Any]:
        """redis-py's keyword arguments for a connection to the primary (not to a Sentinel)."""
        options: dict[str, Any] = {"db": self.db, **self.options}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if self.tls:
            options["ssl"] = True
        return options


def is_sentinel_url(url: str) -> bool:
    return urlsplit(url).scheme in SCHEMES


def parse(url: str) -> SentinelUrl:
    """A Sentinel URL's parts; ValueError, never quoting the password, if it is malformed."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"a Sentinel URL starts with redis+sentinel:// (got {parts.scheme!r}:)")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    primary, db = _path(parts.path)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    sentinel_password = query.pop(SENTINEL_PASSWORD, None)
    return SentinelUrl(
        sentinels=tuple(_address(host) for host in hosts.split(",")),
        primary=primary,
        db=db,
        tls=parts.scheme == "rediss+sentinel",
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=sentinel_password or None,
        options={name: _option(name, value) for name, value in query.items()},
    )


def broker_url(url: SentinelUrl) -> str:
    """Kombu's spelling: one `sentinel://` URL per Sentinel, joined by `;` (kombu moves to the
    next when one fails, and reads the password and database off the one it is at). The
    primary's name goes in the transport options (`transport_options`)."""
    auth = quote(url.username or "", safe="")
    if url.password:
        auth += ":" + quote(url.password, safe="")
    at = f"{auth}@" if auth else ""
    return ";".join(
        f"sentinel://{at}{_host_port(host, port)}/{url.db}" for host, port in url.sentinels
    )


def transport_options(url: SentinelUrl) -> dict[str, Any]:
    """Kombu's Sentinel transport options: the primary's name, and the Sentinels' password."""
    options: dict[str, Any] = {"master_name": url.primary}
    if url.sentinel_password:
        options["sentinel_kwargs"] = {"password": url.sentinel_password}
    return options


def broker_tls(url: SentinelUrl) -> dict[str, Any] | None:
    """Celery's `broker_use_ssl` for a rediss+sentinel URL (kombu takes no TLS option from a
    sentinel:// URL), else None."""
    if not url.tls:
        return None
    return {name: value for name, value in url.options.items() if name.startswith("ssl_")}


def _path(path: str) -> tuple[str, int]:
    segments = [unquote(segment) for segment in path.strip("/").split("/")]
    if not segments[0] or len(segments) > 2:
        raise ValueError(
            "a Sentinel URL names the primary after its hosts: "
            "redis+sentinel://host:port[,host:port]/<primary name>[/<db>]"
        )
    if len(segments) == 1:
        return segments[0], 0
    if not segments[1].isdigit():
        raise ValueError(f"a Sentinel URL's database is a number (got {segments[1]!r})")
    return segments[0], int(segments[1])


def _address(text: str) -> tuple[str, int]:
    """`host:port`, `host` or `[v6]:port` as (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = text.partition(":")
    if not host:
        raise ValueError(f"a Sentinel URL lists a host without a name ({text!r})")
    if port and not port.isdigit():
        raise ValueError(f"a Sentinel's port is a number (got {port!r} in {text!r})")
    return host, int(port) if port else DEFAULT_PORT


def _option(name: str, value: str) -> Any:
    parser = cast("Callable[[str], Any] | None", URL_QUERY_ARGUMENT_PARSERS.get(name))
    try:
        return parser(value) if parser else value
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid value for {name!r} in the Sentinel URL") from exc


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
