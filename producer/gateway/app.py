"""The gateway's ASGI app: `create_app(settings)`. One `Serving` per process (made at startup,
closed at shutdown) serves every request; the routes (routes.py) call it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from genq.common.handover import settings_from_environment
from genq.common.settings import Settings
from genq.producer.gateway import auth, errors, followers, page, routes
from genq.producer.gateway.serving import Serving


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway, on `settings` or this process's (`genq serve`'s plan, else the GENQ_*
    variables: genq.common.handover)."""
    settings = settings or settings_from_environment()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        followers.raise_fd_limit(settings.gateway_max_streams)
        serving = Serving(settings)
        app.state.serving = serving
        sweeper = asyncio.create_task(serving.sweep_forever())  # see streams.py
        policies = asyncio.create_task(serving.publish_policies(app.state.keys.policies))
        try:
            yield
        finally:
            policies.cancel()
            sweeper.cancel()
            await serving.aclose()

    app = FastAPI(title="genq", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.keys = settings.api_key_table()
    errors.install(app)
    app.include_router(routes.router, dependencies=[Depends(auth.check)])
    app.include_router(page.router)  # the page itself; what it calls needs a key
    return app
