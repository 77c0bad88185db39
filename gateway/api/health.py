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
from gateway.service import Gateway


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    checks = {
        "state": await gateway.state.ping(),
        "cache": await gateway.cache.writable(),
        "upstreams": any(route.pool.usable() for route in gateway.router.routes),
        "accepting": not request.app.state.draining,
    }
    required = dict(checks)
    if gateway.settings.state.on_redis_error == "fail-open":
        required.pop("state")
    ready = all(required.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
