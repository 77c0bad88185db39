"""`create_app(settings)`: the one assembly point of routes, middleware and lifespan."""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from gateway.api import admin, console, files, health, images, models, openapi
from gateway.api.responses import error_response
from gateway.body_budget import BodyBudget, BodyBudgetGate
from gateway.drain import DrainGate
from gateway.errors import GatewayError, InvalidRequest, NotFound, ServerError
from gateway.keys import KeyRing
from gateway.metrics import Metrics, process_exited
from gateway.middleware import BearerGuard, BodyLimit, ClientAuth, RequestContext, TeamPrecheck
from gateway.precheck import RatePrecheck
from gateway.service import Gateway
from gateway.settings import Settings
from gateway.state.budget import StateBudget

log = logging.getLogger("gateway")


async def _remember(request: Request, error: GatewayError) -> None:
    """List the error for operators: a team's request, or any server error."""
    team = getattr(request.state, "team", None)
    if team is None and error.status < 500:
        return
    gateway: Gateway = request.app.state.gateway
    route = getattr(request.scope.get("route"), "path", request.url.path)
    await gateway.recent_errors.record(
        error,
        getattr(request.state, "request_id", ""),
        route,
        team.name if team is not None else None,
        getattr(request.state, "model", None),
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    await _remember(request, exc)
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
    error = ServerError("The gateway failed unexpectedly; the error was logged.")
    await _remember(request, error)
    return error_response(error)


async def _metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    body, content_type = gateway.metrics.exposition()
    return Response(body, media_type=content_type)


def _guards(settings: Settings) -> list[Middleware]:
    """The admin API takes only admin keys; `/metrics` a token when one is configured."""
    admins = KeyRing({h: "admin" for h in settings.admin.key_hashes})
    guards = [
        Middleware(BearerGuard, prefix="/admin/", accepts=lambda key: admins.owner(key) is not None)
    ]
    token = settings.server.metrics_token
    if token is not None:
        expected = token.encode()
        guards.append(
            Middleware(
                BearerGuard,
                prefix="/metrics",
                accepts=lambda key: hmac.compare_digest(key.encode(), expected),
            )
        )
    return guards


def create_app(settings: Settings, metrics: Metrics | None = None) -> Starlette:
    gateway = Gateway(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway.start()
        await gateway.retention.clear_strays()
        await gateway.count_cache()
        try:
            yield
        finally:
            await gateway.aclose()
            process_exited()

    routes = [
        Route("/v1/images/generations", images.create_image, methods=["POST"]),
        Route("/v1/images/edits", images.create_image, methods=["POST"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.get_model, methods=["GET"]),
        Route("/images/{name}", files.get_image, methods=["GET", "HEAD"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/openapi.json", openapi.get_openapi, methods=["GET"]),
        Route("/admin/usage", admin.get_usage, methods=["GET"]),
        Route("/admin/upstreams", admin.get_upstreams, methods=["GET"]),
        Route(
            "/admin/upstreams/{name}/keys/{fingerprint}/enable", admin.enable_key, methods=["POST"]
        ),
        Route("/admin/usage/series", console.usage_series, methods=["GET"]),
        Route("/admin/errors", console.recent_errors, methods=["GET"]),
        Route("/v1/console/images", console.team_images, methods=["GET"]),
        Route("/v1/console/usage", console.team_usage, methods=["GET"]),
        Route("/console", console.page, methods=["GET", "HEAD"]),
        Mount("/console/static", app=console.assets()),
    ]
    middleware = [
        Middleware(RequestContext, metrics=gateway.metrics),
        Middleware(DrainGate),
        Middleware(
            BodyLimit,
            max_bytes=gateway.max_body_bytes,
            limit_mb=settings.server.max_body_mb,
            timeout_s=settings.server.body_timeout_s,
        ),
        Middleware(ClientAuth, team_for_key=gateway.team_for_key),
        Middleware(StateBudget, seconds=settings.state.timeout_s),
        *_guards(settings),
        Middleware(TeamPrecheck, refusal=RatePrecheck(gateway.limiter)),
        Middleware(BodyBudgetGate, budget=BodyBudget.for_server(settings.server)),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            GatewayError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.draining = False
    return app
