"""`/healthz` (the process answers) and `/readyz` (it can serve right now).

Ready means: the shared state answers (required only under `fail-closed`; `fail-open` serves
without it, so taking every replica out of the load balancer would turn an outage into a
total one), the cache is writable (a filesystem cache also with `cache.min_free_mb` free, so
a replica leaves the load balancer before a full disk loses paid images), some upstream key is
usable, and the gateway is not draining after SIGTERM.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.responses import JSONResponse
from gateway.cache import ResultCache
from gateway.routing import Router
from gateway.state.base import State


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


class Readiness:
    """`/readyz`, bound to the parts it checks; `state_required` is false under fail-open."""

    def __init__(
        self, state: State, cache: ResultCache, router: Router, state_required: bool
    ) -> None:
        self.state = state
        self.cache = cache
        self.router = router
        self.state_required = state_required

    async def readyz(self, request: Request) -> Response:
        checks = {
            "state": await self.state.ping(),
            "cache": await self.cache.writable(),
            "upstreams": any(route.pool.usable() for route in self.router.routes),
            "accepting": not request.app.state.draining,
        }
        required = dict(checks)
        if not self.state_required:
            required.pop("state")
        ready = all(required.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
