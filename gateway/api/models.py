"""`GET /v1/models` and `GET /v1/models/{id}`: the catalog in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.responses import JSONResponse
from gateway.catalog import MODELS, ModelSpec
from gateway.errors import ModelNotFound
from gateway.service import Gateway

CREATED = 1_735_689_600


def _entry(spec: ModelSpec, gateway: Gateway) -> dict[str, Any]:
    served = [r.upstream.kind for r in gateway.router.serving(spec.id)]
    return {
        "id": spec.id,
        "object": "model",
        "created": CREATED,
        "owned_by": "black-forest-labs",
        "flux": {**spec.describe(), "served_by": sorted(set(served))},
    }


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    data = [_entry(spec, gateway) for spec in MODELS.values() if gateway.router.serving(spec.id)]
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    model_id = request.path_params["model_id"]
    spec = MODELS.get(gateway.settings.aliases.get(model_id, model_id))
    if spec is None or not gateway.router.serving(spec.id):
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    return JSONResponse(_entry(spec, gateway))
