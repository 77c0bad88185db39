"""`create_app(settings)`: the one assembly point of routes, middleware and lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api import files, health, images, models
from gateway.api.responses import error_response
from gateway.errors import ApiError, InvalidRequest, NotFound, ServerError
from gateway.metrics import Metrics
from gateway.middleware import BodyLimit, ClientAuth, RequestContext
from gateway.service import Gateway
from gateway.settings import Settings

log = logging.getLogger("gateway")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound(f"Unknown route: {request.method} {request.url.path}"))
    error = InvalidRequest(
        str(exc.detail), code="method_not_allowed" if exc.status_code == 405 else None
    )
    error.status = exc.status_code
    return error_response(error, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return error_response(ServerError("The gateway failed unexpectedly; the error was logged."))


async def _metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings, metrics: Metrics | None = None) -> Starlette:
    gateway = Gateway(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    routes = [
        Route("/v1/images/generations", images.create_image, methods=["POST"]),
        Route("/v1/images/edits", images.create_image, methods=["POST"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.get_model, methods=["GET"]),
        Route("/images/{name}", files.get_image, methods=["GET", "HEAD"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
    ]
    middleware = [
        Middleware(RequestContext, metrics=gateway.metrics),
        Middleware(
            BodyLimit, max_bytes=gateway.max_body_bytes, limit_mb=settings.server.max_body_mb
        ),
        Middleware(ClientAuth, team_for_key=gateway.team_for_key),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.draining = False
    return app
