"""`GET /v1/models` and `GET /v1/models/{id}`: the catalog in OpenAI's list shape."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.responses import JSONResponse
from gateway.catalog import MODELS, ModelSpec
from gateway.errors import ModelNotFound
from gateway.routing import Router

CREATED = 1_735_689_600


class Models:
    """The catalog as served: only models some configured upstream runs."""

    def __init__(self, router: Router, aliases: dict[str, str]) -> None:
        self.router = router
        self.aliases = aliases

    def _entry(self, spec: ModelSpec) -> dict[str, Any]:
        served = [r.upstream.kind for r in self.router.serving(spec.id)]
        return {
            "id": spec.id,
            "object": "model",
            "created": CREATED,
            "owned_by": "black-forest-labs",
            "flux": {**spec.describe(), "served_by": sorted(set(served))},
        }

    async def list_models(self, request: Request) -> Response:
        data = [self._entry(spec) for spec in MODELS.values() if self.router.serving(spec.id)]
        return JSONResponse({"object": "list", "data": data})

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        spec = MODELS.get(self.aliases.get(model_id, model_id))
        if spec is None or not self.router.serving(spec.id):
            raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
        return JSONResponse(self._entry(spec))
