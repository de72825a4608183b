"""Fault tier: genq against hostile input and broken parts (a killed worker, relay or Redis).

It reuses the integration tier's fixtures: one real redis-server for the session, the
session's relay and worker, and `make_stack` for tests that kill things on a stack of their own.
"""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401  (fixtures, found by name)
    client,
    databases,
    genq_env,
    make_stack,
    redis_client,
    redis_server,
    relay,
    settings,
    tiny_vocab,
    worker,
)
