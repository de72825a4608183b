"""GET /v1/models: the registry's models, in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from common.registry import ModelRegistry

router = APIRouter()
CREATED = 0  # the registry keeps no creation time


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    registry = ModelRegistry.from_settings(request.app.state.settings)
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": CREATED, "owned_by": "genq"}
            for name in registry.names()
        ],
    }


@router.get("/v1/models/{model}")
async def get_model(model: str, request: Request) -> dict[str, Any]:
    registry = ModelRegistry.from_settings(request.app.state.settings)
    registry.get(model)  # UnknownModel: 404
    return {"id": model, "object": "model", "created": CREATED, "owned_by": "genq"}
