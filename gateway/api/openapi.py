"""`GET /openapi.json`: OpenAPI 3.1 for the gateway's HTTP API.

The image request schemas are `ImageRequest.model_json_schema()`, the very model that
validates requests, so the description cannot drift from what the gateway accepts.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway import __version__
from gateway.api.openapi_schemas import Schema, ref, schemas
from gateway.api.responses import JSONResponse
from gateway.settings import Settings

IMAGE_TYPES = "image/png, image/jpeg, image/webp"
ERROR_CASES = {
    400: "Invalid request: a bad field or value, too many images, content policy",
    401: "Missing or wrong key",
    403: "Model not allowed for the team",
    404: "Unknown model, route or resource",
    409: "Idempotency-Key reused with a different body",
    413: "Body over server.max_body_mb",
    429: "Team rate limit, quota or budget (`retry-after` on rate limits)",
    502: "Upstream failed after it may have charged the job (`x-should-retry: false`)",
    503: "Every usable upstream key is cooling or disabled, or the state is unavailable",
    504: "Upstream timeout (`x-should-retry: false`)",
}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: Schema, *errors: int) -> Schema:
    responses: Schema = {"200": {"description": description, "content": _json(schema)}}
    for status in errors:
        responses[str(status)] = {
            "description": ERROR_CASES[status],
            "content": _json(ref("Error")),
        }
    return responses


def _param(
    name: str, where: str, description: str, required: bool = True, schema: Schema | None = None
) -> Schema:
    if schema is None:
        schema = {"type": "string", "format": "date"} if name == "since" else {"type": "string"}
    return {
        "name": name,
        "in": where,
        "required": required,
        "description": description,
        "schema": schema,
    }


def _image_operation(operation_id: str, summary: str, body: Schema) -> Schema:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": [
                _param("Idempotency-Key", "header", "Replay the first answer for 24 h", False)
            ],
            "requestBody": {"required": True, "content": body},
            "responses": _answer(
                "The images",
                ref("ImagesResponse"),
                400,
                401,
                403,
                404,
                409,
                413,
                429,
                502,
                503,
                504,
            ),
        }
    }


def _integer(low: int, high: int, default: int) -> Schema:
    return {"type": "integer", "minimum": low, "maximum": high, "default": default}


def console_paths(admin: list[Schema]) -> Schema:
    """The JSON the web console reads: a team's own results and usage, and operator views."""
    return {
        "/v1/console/images": {
            "get": {
                "operationId": "consoleImages",
                "summary": "The team's results, newest first, a page at a time",
                "parameters": [
                    _param(
                        "before",
                        "query",
                        "Only results created before this unix time (the last `next_before`)",
                        False,
                        {"type": "number", "minimum": 0},
                    ),
                    _param("limit", "query", "Results per page", False, _integer(1, 100, 24)),
                ],
                "responses": _answer("A page of results", ref("ConsoleImagePage"), 400, 401),
            }
        },
        "/v1/console/usage": {
            "get": {
                "operationId": "consoleUsage",
                "summary": "The team's use of its limits right now",
                "responses": _answer("Usage against limits", ref("TeamUsage"), 401),
            }
        },
        "/admin/usage/series": {
            "get": {
                "operationId": "adminUsageSeries",
                "summary": "Per team, one value a day (zeros included), for plotting",
                "security": admin,
                "parameters": [
                    _param(
                        "days",
                        "query",
                        "How many UTC days up to today",
                        False,
                        _integer(1, 400, 30),
                    )
                ],
                "responses": _answer("Daily series", ref("UsageSeries"), 400, 401),
            }
        },
        "/admin/errors": {
            "get": {
                "operationId": "adminErrors",
                "summary": "The latest errors answered to teams, and server errors, newest first",
                "security": admin,
                "parameters": [_param("limit", "query", "How many", False, _integer(1, 200, 50))],
                "responses": _answer("Recent errors", ref("ErrorLog"), 400, 401),
            }
        },
    }


def paths(metrics_security: list[Schema]) -> Schema:
    public: list[Schema] = []
    admin: list[Schema] = [{"adminKey": []}]
    image_file = {"type": "string", "contentMediaType": "image/*"}
    return {
        "/v1/images/generations": _image_operation(
            "createImage", "Generate images from a prompt", _json(ref("ImageRequest"))
        ),
        "/v1/images/edits": _image_operation(
            "createImageEdit",
            "Edit or combine reference images",
            {
                "multipart/form-data": {
                    "schema": ref("ImageEditForm"),
                    "encoding": {
                        "image": {"contentType": IMAGE_TYPES},
                        "image[]": {"contentType": IMAGE_TYPES},
                    },
                },
                **_json(ref("ImageRequest")),
            },
        ),
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The models this gateway serves",
                "responses": _answer("The catalog", ref("ModelList"), 401),
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "retrieveModel",
                "summary": "One model and its limits",
                "parameters": [_param("model", "path", "Model id or alias")],
                "responses": _answer("The model", ref("Model"), 401, 404),
            }
        },
        "/images/{name}": {
            "get": {
                "operationId": "getImage",
                "summary": "A durable result link: immutable, with Range support",
                "security": public,
                "parameters": [_param("name", "path", "Image id and extension")],
                "responses": {
                    "200": {
                        "description": "The image bytes",
                        "content": {t: {"schema": image_file} for t in IMAGE_TYPES.split(", ")},
                    },
                    "206": {"description": "The requested byte range"},
                    "304": {"description": "Not modified (ETag)"},
                    "404": {"description": ERROR_CASES[404], "content": _json(ref("Error"))},
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process answers",
                "security": public,
                "responses": {"200": {"description": "Alive"}},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "State reachable, cache writable, a key usable, not draining",
                "security": public,
                "responses": {
                    "200": {"description": "Ready", "content": _json(ref("Readiness"))},
                    "503": {"description": "Not ready", "content": _json(ref("Readiness"))},
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics, merged across workers",
                "security": metrics_security,
                "responses": {
                    "200": {"description": "Text exposition format", "content": {"text/plain": {}}}
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": public,
                "responses": {"200": {"description": "OpenAPI 3.1", "content": _json({})}},
            }
        },
        "/admin/usage": {
            "get": {
                "operationId": "adminUsage",
                "summary": "Requests, images, spend, errors and rejections per team and day",
                "security": admin,
                "parameters": [
                    _param("team", "query", "One team (default: all)", False),
                    _param("since", "query", "First day, YYYY-MM-DD (default: 30 days ago)", False),
                ],
                "responses": _answer("Usage", ref("UsageReport"), 400, 401, 404),
            }
        },
        "/admin/upstreams": {
            "get": {
                "operationId": "adminUpstreams",
                "summary": "Every upstream key by fingerprint, with state and in-flight jobs",
                "security": admin,
                "responses": _answer("Upstreams", ref("UpstreamList"), 401),
            }
        },
        "/admin/upstreams/{name}/keys/{fingerprint}/enable": {
            "post": {
                "operationId": "adminEnableKey",
                "summary": "Put a disabled or cooling key back into service",
                "security": admin,
                "parameters": [
                    _param("name", "path", "Upstream name"),
                    _param("fingerprint", "path", "Key fingerprint"),
                ],
                "responses": _answer("The upstream after the change", ref("Upstream"), 401, 404),
            }
        },
        **console_paths(admin),
    }


def document(settings: Settings) -> Schema:
    """The whole document, from the settings alone: no gateway needs to be running."""
    bearer = {"type": "http", "scheme": "bearer"}
    token_set = settings.server.metrics_token is not None
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "flux-gateway",
            "version": __version__,
            "description": "OpenAI-compatible FLUX image generation and editing.",
        },
        "servers": [{"url": settings.server.base_url}],
        "security": [{"clientKey": []}],
        "paths": paths([{"metricsToken": []}] if token_set else []),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "clientKey": {**bearer, "description": "A team's client key"},
                "adminKey": {**bearer, "description": "An admin key ([admin].key_hashes)"},
                "metricsToken": {**bearer, "description": "server.metrics_token"},
            },
        },
    }


class OpenAPI:
    """`GET /openapi.json`: the document, built once from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.body = document(settings)

    async def get_openapi(self, request: Request) -> Response:
        return JSONResponse(self.body)
