"""`POST /v1/images/generations` and `POST /v1/images/edits`: one handler, two routes."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.responses import JSONResponse
from gateway.requests import parse
from gateway.service import Gateway


async def create_image(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    team = request.state.team
    parsed = await parse(request, gateway.max_body_bytes, gateway.own_prefix)
    spec = gateway.model(parsed.body.model, team)
    request.state.model = spec.id
    delivered = await gateway.generate(parsed, spec, team, request.state.request_id)
    response_format = parsed.body.response_format or "url"
    data = [await gateway.item(d, response_format) for d in delivered]
    upstreams = ",".join(dict.fromkeys(d.outcome.upstream for d in delivered))
    request.state.upstream = upstreams
    request.state.key_fingerprint = ",".join(
        dict.fromkeys(d.outcome.key_fingerprint for d in delivered)
    )
    request.state.upstream_seconds = max(d.outcome.upstream_seconds for d in delivered)
    request.state.images = len(delivered)
    return JSONResponse(
        {"created": int(time.time()), "data": data},
        headers={"x-gateway-upstream": upstreams},
    )
