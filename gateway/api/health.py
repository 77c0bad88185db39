"""`/healthz` (the process answers) and `/readyz` (it can serve: cache writable, not draining)."""

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
        "cache": await gateway.cache.writable(),
        "upstreams": any(route.pool.usable() for route in gateway.router.routes),
        "accepting": not request.app.state.draining,
    }
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
