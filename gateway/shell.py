"""The app `create_app` returns before anything runs: its lifespan assembles the real one.

Requests are handed to the app assembled from the live parts; before the lifespan started
it (or after it ended) there is nothing to serve them, and they get a retryable 503.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.responses import error_response
from gateway.errors import ServiceUnavailable


class Assembled:
    """Where the lifespan puts the app it assembled, and takes it away again."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None


class Forward:
    """Pure ASGI: the lifespan goes to the shell, every request to the assembled app."""

    def __init__(self, app: ASGIApp, assembled: Assembled) -> None:
        self.app = app
        self.assembled = assembled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        served = self.assembled.app
        if served is None:
            refusal = ServiceUnavailable(
                "This gateway instance is not started; retry the request.",
                code="not_started",
                headers={"retry-after": "1", "x-should-retry": "true"},
            )
            await error_response(refusal)(scope, receive, send)
            return
        await served(scope, receive, send)
