"""`POST /v1/images/generations` and `POST /v1/images/edits`: one handler, two routes.

The flow is one way: parse and validate → plan (which upstreams can honour it) → idempotency
→ team admission → run → settle → answer. Whatever the outcome, the request ends with one
usage record for its team.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from gateway import usage
from gateway.api.responses import JSONResponse
from gateway.cache import StoredImage
from gateway.errors import QuotaExceeded, RateLimited
from gateway.idempotency import body_hash
from gateway.requests import parse
from gateway.service import Gateway
from gateway.usage import Usage

REPLAY_HEADER = "x-idempotent-replay"
IGNORED_HEADER = "x-gateway-ignored"


def stored_shape(image: StoredImage) -> dict[str, str]:
    """`output_format` and `size` of what was stored, as gpt-image answers carry them."""
    shape = {"output_format": EXTENSION_FORMATS[image.content_type]}
    if image.width:
        shape["size"] = f"{image.width}x{image.height}"
    return shape


EXTENSION_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


async def create_image(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    used = Usage()
    try:
        return await _create_image(request, gateway, used)
    except (RateLimited, QuotaExceeded):
        used.rate_limited = True
        raise
    except BaseException:
        used.error = True
        raise
    finally:
        await usage.record(gateway.state, request.state.team.name, used)


async def _create_image(request: Request, gateway: Gateway, used: Usage) -> Response:
    team = request.state.team
    request_id: str = request.state.request_id
    parsed = await parse(request, gateway.max_body_bytes, gateway.own_prefix)
    spec = gateway.model(parsed.body.model, team)
    request.state.model = spec.id
    candidates = gateway.router.plan(parsed, spec)

    idem_key = request.headers.get("idempotency-key")
    idem_name = gateway.idempotency.name(team.name, idem_key) if idem_key is not None else None
    if idem_name is not None:
        replay = await gateway.idempotency.begin(idem_name, body_hash(parsed))
        if replay is not None:
            return JSONResponse(replay.body, headers={**replay.headers, REPLAY_HEADER: "true"})
    try:
        candidates = await gateway.inline_own_links(candidates, parsed.references)
        plan = await gateway.estimate(spec, candidates)
        n = parsed.body.n
        ticket = await gateway.limiter.admit(team, request_id, n, plan.bound_micros * n)
        request.state.ratelimit_headers = ticket.headers
        delivered = []
        gateway.metrics.inflight.labels(team=team.name).inc()
        try:
            delivered = await gateway.generate(parsed, spec, candidates, team, request_id)
        finally:
            gateway.metrics.inflight.labels(team=team.name).dec()
            used.spend_micros = await gateway.settle(ticket, spec, plan, delivered)
        used.images = len(delivered)
        response_format = parsed.body.response_format or team.default_response_format
        data = [await gateway.item(d, response_format) for d in delivered]
    except BaseException:
        if idem_name is not None:
            await gateway.idempotency.drop(idem_name)
        raise
    upstreams = ",".join(dict.fromkeys(d.outcome.upstream for d in delivered))
    request.state.upstream = upstreams
    request.state.key_fingerprint = ",".join(
        dict.fromkeys(d.outcome.key_fingerprint for d in delivered)
    )
    request.state.upstream_seconds = max(d.outcome.upstream_seconds for d in delivered)
    request.state.rehost_seconds = max(d.rehost_seconds for d in delivered)
    request.state.images = len(delivered)
    body = {"created": int(time.time()), "data": data, **stored_shape(delivered[0].image)}
    headers = {"x-gateway-upstream": upstreams, **ticket.headers}
    ignored = parsed.body.ignored()
    if ignored:
        headers[IGNORED_HEADER] = ",".join(ignored)
    if idem_name is not None:
        await gateway.idempotency.finish(idem_name, body, headers, [d.image for d in delivered])
    return JSONResponse(body, headers=headers)
