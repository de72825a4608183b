"""The Celery configuration producers and workers share (producers send tasks by name)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from genq.common import sentinel
from genq.common.adapters import kombu_priority, kombu_redis
from genq.common.settings import Settings

GENERATE_TASK = "genq.generate"
BUNDLE_TASK = "genq.generate_bundle"  # several short jobs of a batch in one message
# One Redis list per priority, so that a more urgent job queued later is served first.
BROKER_PRIORITY_STEPS = list(range(10))


def priority_lists(queue: str) -> list[str]:
    """The Redis lists holding a queue's waiting task messages, one per priority step (named
    as kombu names them: genq.common.adapters.kombu_priority)."""
    return kombu_priority.priority_lists(queue, BROKER_PRIORITY_STEPS)


def broker_url(redis_url: str) -> str:
    """Kombu's spelling of a redis-py URL (GENQ_REDIS_URL is redis-py's). Kombu takes a
    password only in the user part (`?password=` makes it fail with a TypeError), and names a
    Unix socket `redis+socket://` with its database as `virtual_host` (`unix://` is "No such
    transport"). As in redis-py, a password in the user part wins over `?password=`. Other
    query parameters (TLS options among them) pass through unchanged."""
    parts = urlsplit(redis_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [value for name, value in query if name == "password"]
    if parts.scheme != "unix" and not given:
        return redis_url
    query = [(name, value) for name, value in query if name != "password"]
    password = unquote(parts.password) if parts.password else (given or [""])[-1]
    auth = quote(unquote(parts.username or ""), safe="")
    if password:
        auth += ":" + quote(password, safe="")
    host = parts.netloc.rpartition("@")[2]
    scheme = parts.scheme
    if scheme == "unix":
        scheme = "redis+socket"
        query = [("virtual_host" if name == "db" else name, value) for name, value in query]
    url = f"{scheme}://{auth}@{host}" if auth else f"{scheme}://{host}"
    return url + parts.path + (f"?{urlencode(query)}" if query else "")


def sentinel_config(redis_url: str) -> dict[str, Any]:
    """For a redis+sentinel:// URL, the broker settings of kombu's Sentinel transport (its
    `sentinel://` URLs, the primary's name, TLS): merged over `celery_config`'s. Else {}."""
    if not sentinel.is_sentinel_url(redis_url):
        return {}
    url = sentinel.parse(redis_url)
    tls = sentinel.broker_tls(url)
    return {
        "broker_url": sentinel.broker_url(url),
        **({"broker_use_ssl": tls} if tls is not None else {}),
        "broker_transport_options": sentinel.transport_options(url),
    }


def celery_config(settings: Settings) -> dict[str, Any]:
    # A redis://, rediss:// or sentinel:// broker is served by genq's Redis transport, which
    # keeps a worker alive when Redis is lost (genq.common.adapters.kombu_redis).
    kombu_redis.install()
    config = _config(settings)
    ha = sentinel_config(settings.redis_url)
    config["broker_transport_options"].update(ha.pop("broker_transport_options", {}))
    return {**config, **ha}


def _config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": broker_url(settings.redis_url),
        # No Celery result backend: a job's outcome is its record and stream. (A backend
        # would also make every send subscribe to, and later leave, a result channel.)
        "task_ignore_result": True,
        # JSON only: a pickle from the broker would be code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # A job is acked when it ends; a worker process lost mid-job gives the message back.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Flower needs task events; the `sent` event would cost every submit a round trip.
        "worker_send_task_events": True,
        "task_send_sent_event": False,
        "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "priority_steps": BROKER_PRIORITY_STEPS,
            # A worker polls its queues (one per model it serves) priority step first: every
            # queue's most urgent list, then the next step. Within a step, round robin: a
            # worker of two models does not serve one model's backlog before the other's.
            "queue_order_strategy": "round_robin",
        },
        "broker_connection_retry_on_startup": True,
        # Queues are per model (genq.common.routing.queue_name), so not declared here: a producer
        # sends to a model's queue whether or not a worker for it has started yet.
        "task_create_missing_queues": True,
    }


def make_celery(settings: Settings, main: str = "genq") -> Any:
    """A Celery app with genq's configuration; producers use it only to send tasks by name."""
    from celery import Celery

    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
