"""Graceful drain: on SIGTERM readiness fails first, and the listener closes only later.

uvicorn closes its listener the moment it is told to exit. So SIGTERM first only sets
`app.state.draining` (`/readyz` turns 503, new image requests get a retryable 503), waits
`server.drain_grace_s` for load balancers to notice, and only then hands the signal to uvicorn,
which closes the listener and waits up to `server.drain_s` for the requests in flight, each
with its upstream job and rehost. A second SIGTERM skips the wait.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.responses import error_response
from gateway.errors import ServiceUnavailable

log = logging.getLogger("gateway")

IMAGE_ROUTES = "/v1/images/"


class DrainGate:
    """A retryable 503 for new image requests once draining; links and probes still answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(IMAGE_ROUTES)
            and scope["app"].state.draining
        ):
            refusal = ServiceUnavailable(
                "This gateway instance is shutting down; retry the request.",
                code="draining",
                headers={"retry-after": "1", "x-should-retry": "true", "connection": "close"},
            )
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def drain_on_sigterm(app: Starlette, grace_s: float) -> None:
    """Put the drain in front of uvicorn's SIGTERM handler.

    Called from inside uvicorn's `serve` (the app factory), after uvicorn installed its own
    handlers and in the main thread, which is where signal handlers can be set.
    """
    loop = asyncio.get_running_loop()
    exit_now = signal.getsignal(signal.SIGTERM)
    if not callable(exit_now):
        return

    def on_sigterm(sig: int, frame: object) -> None:
        if app.state.draining:
            exit_now(sig, None)
            return
        app.state.draining = True
        log.info("draining", extra={"grace_s": grace_s})
        loop.call_soon_threadsafe(loop.call_later, grace_s, exit_now, sig, None)

    signal.signal(signal.SIGTERM, on_sigterm)
