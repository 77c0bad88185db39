"""`create_app(settings)`: the one assembly point of parts, routes, middleware and lifespan.

`create_app` checks the config and builds only what has no side effects (metrics, the key
ring, guards); its lifespan opens the live parts, binds each handler to the parts it needs,
and serves requests from that assembled app until shutdown. The console's own parts (gallery,
recent errors) are mounted here, so the core never imports the console.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.datastructures import State as AppState
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from gateway.api import bfl_api, console, health, openapi
from gateway.api.admin import Admin
from gateway.api.files import LINK_METHODS, ImageFiles, ImageLane
from gateway.api.images import CreateImage
from gateway.api.jobs import JobRoutes
from gateway.api.models import Models
from gateway.api.responses import ErrorHandler, error_response
from gateway.body_budget import BodyBudget, BodyBudgetGate
from gateway.console.gallery import Gallery
from gateway.console.recent import RecentErrors
from gateway.drain import DrainGate
from gateway.errors import GatewayError, InvalidRequest, NotFound, ServerError
from gateway.keys import KeyRing
from gateway.metrics import Metrics, process_exited
from gateway.middleware import BearerGuard, BodyLimit, ClientAuth, RequestContext, TeamPrecheck
from gateway.precheck import RatePrecheck
from gateway.service import Parts, open_parts
from gateway.settings import Settings, TeamSettings
from gateway.shell import Assembled, Forward
from gateway.state.budget import StateBudget
from gateway.validation import client_keys, validate

log = logging.getLogger("gateway")


def _error_handlers(recent: RecentErrors) -> dict[type[Exception], ErrorHandler]:
    """One OpenAI envelope for every error; team errors and server errors are also listed."""

    async def remember(request: Request, error: GatewayError) -> None:
        team = getattr(request.state, "team", None)
        if team is None and error.status < 500:
            return
        route = getattr(request.scope.get("route"), "path", request.url.path)
        await recent.record(
            error,
            getattr(request.state, "request_id", ""),
            route,
            team.name if team is not None else None,
            getattr(request.state, "model", None),
        )

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        await remember(request, exc)
        return error_response(exc)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled error", exc_info=exc)
        error = ServerError("The gateway failed unexpectedly; the error was logged.")
        await remember(request, error)
        return error_response(error)

    return {GatewayError: api_error, HTTPException: _http_error, Exception: unexpected}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFound(f"Unknown route: {request.method} {request.url.path}"))
    error = InvalidRequest(
        str(exc.detail), code="method_not_allowed" if exc.status_code == 405 else None
    )
    error.status = exc.status_code
    return error_response(error, exc.headers)


def _metrics_route(metrics: Metrics) -> Route:
    async def exposition(request: Request) -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return Route("/metrics", exposition, methods=["GET"])


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


def _routes(
    settings: Settings,
    metrics: Metrics,
    parts: Parts[Gallery],
    recent: RecentErrors,
    image_route: Route,
) -> list[Route | Mount]:
    """Every route, each handler bound to the parts it needs and nothing more."""
    images = CreateImage(
        parts.pipeline,
        parts.idempotency,
        parts.state,
        metrics,
        max_body_bytes(settings),
        parts.jobs,
        settings.jobs,
    )
    jobs = JobRoutes(parts.jobs)
    models = Models(parts.router, settings.aliases)
    ready = health.Readiness(
        parts.state,
        parts.cache,
        parts.router,
        state_required=settings.state.on_redis_error != "fail-open",
    )
    admin = Admin(parts.state, [team.name for team in settings.teams], parts.router)
    view = console.Console(settings, parts.state, parts.index, recent, parts.links)
    bfl = bfl_api.BflApi(
        parts.pipeline, parts.jobs, parts.state, max_body_bytes(settings), settings.server.base_url
    )
    return [
        Route("/v1/images/generations", images.create_image, methods=["POST"]),
        Route("/v1/images/edits", images.create_image, methods=["POST"]),
        Route("/v1/images/jobs", jobs.list_jobs, methods=["GET"]),
        Route("/v1/images/jobs/{job_id}", jobs.get_job, methods=["GET"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models.get_model, methods=["GET"]),
        image_route,
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", ready.readyz, methods=["GET"]),
        _metrics_route(metrics),
        Route("/openapi.json", openapi.OpenAPI(settings).get_openapi, methods=["GET"]),
        Route("/admin/usage", admin.get_usage, methods=["GET"]),
        Route("/admin/upstreams", admin.get_upstreams, methods=["GET"]),
        Route(
            "/admin/upstreams/{name}/keys/{fingerprint}/enable", admin.enable_key, methods=["POST"]
        ),
        Route("/admin/usage/series", view.usage_series, methods=["GET"]),
        Route("/admin/errors", view.recent_errors, methods=["GET"]),
        Route("/v1/console/images", view.team_images, methods=["GET"]),
        Route("/v1/console/usage", view.team_usage, methods=["GET"]),
        Route("/console", view.page, methods=["GET", "HEAD"]),
        Mount("/console/static", app=console.assets()),
        # Last: `/v1/{model}` must not shadow any other `/v1/...` route.
        *bfl.routes(),
    ]


def max_body_bytes(settings: Settings) -> int:
    return int(settings.server.max_body_mb * 1024 * 1024)


def _serving(
    settings: Settings,
    metrics: Metrics,
    parts: Parts[Gallery],
    team_for_key: Callable[[str], TeamSettings | None],
    shared: AppState,
) -> Starlette:
    """The app requests are served from, assembled from the live parts."""
    recent = RecentErrors(parts.state.listings)
    errors = _error_handlers(recent)
    files = ImageFiles(parts.links, parts.cache, settings.cache)
    image_route = Route("/images/{name}", files.get_image, methods=list(LINK_METHODS))
    middleware = [
        Middleware(
            RequestContext, metrics=metrics, trusted_proxies=settings.server.trusted_proxies
        ),
        Middleware(ImageLane, route=image_route, errors=errors),
        Middleware(DrainGate),
        Middleware(
            BodyLimit,
            max_bytes=max_body_bytes(settings),
            limit_mb=settings.server.max_body_mb,
            timeout_s=settings.server.body_timeout_s,
        ),
        Middleware(ClientAuth, team_for_key=team_for_key, native=bfl_api.NATIVE),
        Middleware(StateBudget, seconds=settings.state.timeout_s),
        *_guards(settings),
        Middleware(TeamPrecheck, refusal=RatePrecheck(parts.limiter, parts.state.usage)),
        Middleware(BodyBudgetGate, budget=BodyBudget.for_server(settings.server)),
    ]
    app = Starlette(
        routes=_routes(settings, metrics, parts, recent, image_route),
        middleware=middleware,
        exception_handlers=errors,
    )
    app.state = shared  # one `draining` flag, set on the app `create_app` returned
    return app


def create_app(settings: Settings, metrics: Metrics | None = None) -> Starlette:
    """The gateway's app; ConfigError here, before anything starts, for a config it refuses."""
    validate(settings)
    metrics = metrics or Metrics()
    for team in settings.teams:
        metrics.add_team(team.name, team.monthly_budget_usd)
    keys = client_keys(settings.teams)
    teams = {team.name: team for team in settings.teams}

    def team_for_key(key: str) -> TeamSettings | None:
        name = keys.owner(key)
        return teams.get(name) if name else None

    assembled = Assembled()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            async with open_parts(settings, metrics, Gallery) as parts:
                app.state.parts = parts  # for in-process inspection (tests), not for handlers
                assembled.app = _serving(settings, metrics, parts, team_for_key, app.state)
                try:
                    yield
                finally:
                    assembled.app = None
        finally:
            process_exited()

    app = Starlette(middleware=[Middleware(Forward, assembled=assembled)], lifespan=lifespan)
    app.state.draining = False
    return app
