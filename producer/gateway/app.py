"""The gateway's ASGI app: `create_app(settings)`. One genq AsyncClient per process (made at
startup, closed at shutdown) serves every request; each route module adds its router."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from common.settings import Settings
from producer.client import AsyncClient
from producer.gateway import auth, batches, completions, errors, files, jobs, models, page, streams


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = AsyncClient(settings)
        app.state.client = client
        sweeper = asyncio.create_task(streams.sweep_forever(client))  # see streams.py
        try:
            yield
        finally:
            sweeper.cancel()
            await client.aclose()

    app = FastAPI(title="genq", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.settings = settings
    app.state.keys = settings.gateway_keys()
    errors.install(app)
    api = [Depends(auth.check)]
    for module in (models, completions, jobs, files, batches):
        app.include_router(module.router, dependencies=api)
    app.include_router(page.router)  # the page itself; what it calls needs a key
    return app
