"""Pure ASGI middleware: request ids, metrics and access logs; body limits; bearer auth; the
team's rate pre-check. A refusal that leaves a body unread closes the connection."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.responses import error_response
from gateway.errors import AuthenticationFailed, GatewayError, RequestTimeout, RequestTooLarge
from gateway.ids import unique_hex
from gateway.logs import now_ms
from gateway.metrics import Metrics
from gateway.proxies import TrustedProxies

access_log = logging.getLogger("gateway.access")
AUTH_PREFIX = "/v1/"
IMAGE_PREFIX = "/v1/images/"
PRECHECK_MIN_BODY = 64 * 1024
CLOSE = {"connection": "close"}
PROBES = frozenset({"/metrics", "/healthz", "/readyz"})


_Series = tuple[Counter, Histogram, Histogram]
"""A request's count, duration and overhead metric children."""


class RequestContext:
    """Gives every request an id (echoed as `x-request-id`), then counts and logs it, with
    the client address that `trusted_proxies` lets `X-Forwarded-For` name."""

    def __init__(self, app: ASGIApp, metrics: Metrics, trusted_proxies: Sequence[str] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.proxies = TrustedProxies(trusted_proxies)
        self._children: dict[tuple[str, str, str, int], _Series] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + unique_hex()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, state, status, started)

    def _record(self, scope: Scope, state: dict[str, Any], status: int, started: float) -> None:
        route = _route_template(scope)
        if route in PROBES:
            return
        elapsed = time.perf_counter() - started
        team = state.get("team")
        team_name = team.name if team is not None else ""
        model = state.get("model", "")
        waited = state.get("upstream_seconds", 0.0) + state.get("rehost_seconds", 0.0)
        count, duration, overhead = self._series(route, model, team_name, status)
        count.inc()
        duration.observe(elapsed)
        if "upstream_seconds" in state or status < 500:
            # A 5xx may have waited on an upstream this process did not time: not overhead.
            overhead.observe(max(0.0, elapsed - waited))
        if not access_log.isEnabledFor(logging.INFO):
            return
        access_log.info(
            "request",
            extra={
                "request_id": state["request_id"],
                "method": scope["method"],
                "route": route,
                "client": self._client(scope),
                "status": status,
                "team": team_name or None,
                "model": model or None,
                "upstream": state.get("upstream"),
                "key_fingerprint": state.get("key_fingerprint"),
                "images": state.get("images"),
                "duration_ms": now_ms(started),
                "upstream_ms": _ms(state.get("upstream_seconds")),
                "rehost_ms": _ms(state.get("rehost_seconds")),
            },
        )

    def _series(self, route: str, model: str, team: str, status: int) -> _Series:
        """The request's metric children, looked up once per label set (the sets are bounded:
        routes, models and teams come from the config, statuses from HTTP)."""
        labels = (route, model, team, status)
        series = self._children.get(labels)
        if series is None:
            metrics = self.metrics
            series = self._children[labels] = (
                metrics.requests.labels(route=route, model=model, team=team, status=str(status)),
                metrics.request_duration.labels(route=route, model=model),
                metrics.overhead.labels(route=route),
            )
        return series

    def _client(self, scope: Scope) -> str | None:
        peer = scope.get("client")
        forwarded = Headers(scope=scope).getlist("x-forwarded-for")
        return self.proxies.client(peer[0] if peer else None, forwarded)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _route_template(scope: Scope) -> str:
    """The matched route's path template: the router leaves it in the scope; only requests
    refused before routing (401, 413, draining) are matched here."""
    route = scope.get("route")
    if route is None:
        for candidate in getattr(scope.get("app"), "routes", []):
            if candidate.matches(scope)[0] == Match.FULL:
                route = candidate
                break
    return str(getattr(route, "path", "unmatched"))


class BodyLimit:
    """413 for bodies over the cap: at once by Content-Length, else as soon as it is exceeded.

    A body must also arrive whole within `timeout_s`, so a client that never finishes sending
    (slowloris) gets a 408 and loses the connection instead of holding it forever.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, limit_mb: float, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limit_mb = limit_mb
        self.timeout_s = timeout_s

    def _error(self) -> RequestTooLarge:
        message = f"The request body is larger than {self.limit_mb:g} MB."
        return RequestTooLarge(message, headers=CLOSE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_response(self._error())(scope, receive, send)
            return
        seen = 0
        complete = False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def counted() -> Message:
            nonlocal seen, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"The request body did not arrive within {self.timeout_s:g} s.", headers=CLOSE
                ) from None
            seen += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if seen > self.max_bytes:
                raise self._error()
            return message

        await self.app(scope, counted, send)


def _bearer(scope: Scope) -> tuple[str, str | None]:
    """The raw Authorization header and the key it carries, if it is a bearer one."""
    header = Headers(scope=scope).get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    return header, key if scheme.lower() == "bearer" and key else None


def _body_size(scope: Scope) -> int | None:
    """The declared body size: 0 for none, None when it streams (chunked)."""
    headers = Headers(scope=scope)
    if "transfer-encoding" in headers:
        return None
    length = headers.get("content-length", "0")
    return int(length) if length.isdigit() else 0


def _unread_body(scope: Scope) -> dict[str, str]:
    """`connection: close` for a refusal that leaves a body unread, so the server stops
    receiving it instead of draining it for the next request on the connection."""
    return {} if _body_size(scope) == 0 else CLOSE


def _refusal(header: str) -> AuthenticationFailed:
    if header:
        return AuthenticationFailed("Incorrect API key provided.")
    return AuthenticationFailed("Missing API key: send Authorization: Bearer <key>.")


@dataclass(frozen=True)
class NativeRoutes:
    """Routes that speak a provider's own API (BFL's): its key header is accepted there, and
    a refusal answers in its shape, `refusal(key_given, headers)`."""

    paths: frozenset[str]
    key_header: str
    refusal: Callable[[bool, Mapping[str, str]], ASGIApp]


class ClientAuth:
    """Resolves `Authorization: Bearer <client key>` to a team for every `/v1/` route, and
    on `native` routes the key in their own header too."""

    def __init__(self, app: ASGIApp, team_for_key: Any, native: NativeRoutes | None = None) -> None:
        self.app = app
        self.team_for_key = team_for_key
        self.native = native

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(AUTH_PREFIX):
            await self.app(scope, receive, send)
            return
        header, key = _bearer(scope)
        native = self.native
        if native is not None and _route_template(scope) not in native.paths:
            native = None
        if key is None and native is not None:
            header = Headers(scope=scope).get(native.key_header, "").strip()
            key = header or None
        team = self.team_for_key(key) if key is not None else None
        if team is None:
            if native is not None:
                await native.refusal(bool(header), _unread_body(scope))(scope, receive, send)
                return
            await error_response(_refusal(header), _unread_body(scope))(scope, receive, send)
            return
        scope.setdefault("state", {})["team"] = team
        await self.app(scope, receive, send)


class TeamPrecheck:
    """The team's 429 for an image request before its body is read, when `refusal` (live
    counters, nothing reserved) already knows it; admission still runs after the body.

    Bodies under `PRECHECK_MIN_BODY` are cheap to read and admission refuses them the same
    way, so they skip the extra state read.
    """

    def __init__(
        self, app: ASGIApp, refusal: Callable[[Any], Awaitable[GatewayError | None]]
    ) -> None:
        self.app = app
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        team = scope.get("state", {}).get("team")
        if team is not None and scope["path"].startswith(IMAGE_PREFIX):
            size = _body_size(scope)
            if size is None or size >= PRECHECK_MIN_BODY:
                error = await self.refusal(team)
                if error is not None:
                    await error_response(error, CLOSE)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BearerGuard:
    """401 unless the bearer key is one `accepts` takes, for every path under `prefix`.

    It guards the admin API with the admin key hashes, and `/metrics` when
    `server.metrics_token` is set; client keys open neither.
    """

    def __init__(self, app: ASGIApp, prefix: str, accepts: Callable[[str], bool]) -> None:
        self.app = app
        self.prefix = prefix
        self.accepts = accepts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        header, key = _bearer(scope)
        if key is None or not self.accepts(key):
            await error_response(_refusal(header))(scope, receive, send)
            return
        await self.app(scope, receive, send)
