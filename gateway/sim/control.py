"""The `/_sim` control API tests use to read what arrived and to switch faults on and off."""

from __future__ import annotations

import time
from typing import TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.sim.config import Faults
from gateway.sim.inbound import sim_state

M = TypeVar("M", bound=BaseModel)


class CreditsUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str
    credits: float


async def _parse(request: Request, model: type[M]) -> M | JSONResponse:
    try:
        return model.model_validate(orjson.loads(await request.body()))
    except orjson.JSONDecodeError:
        return JSONResponse({"detail": "body must be JSON"}, 400)
    except ValidationError as invalid:
        return JSONResponse({"detail": invalid.errors(include_url=False)}, 422)


async def requests(request: Request) -> Response:
    state = sim_state(request)
    if request.method == "DELETE":
        state.requests.clear()
        state.issued.clear()
        return Response(status_code=204)
    return JSONResponse({"requests": list(state.requests)})


async def results(request: Request) -> Response:
    """The links handed out since the last clear (oldest first), each with its bytes' hash."""
    state = sim_state(request)
    if request.method == "DELETE":
        state.issued.clear()
        return Response(status_code=204)
    return JSONResponse({"results": list(state.issued.values())})


async def result_bytes(request: Request) -> Response:
    """A stored result's bytes, straight from the store: no signature, no faults."""
    image = sim_state(request).results.get(request.path_params["result_id"])
    if image is None:
        return JSONResponse({"detail": "no such result"}, 404)
    return Response(image.data, media_type=image.content_type)


async def faults(request: Request) -> Response:
    state = sim_state(request)
    if request.method == "PUT":
        parsed = await _parse(request, Faults)
        if isinstance(parsed, JSONResponse):
            return parsed
        state.faults = parsed
    elif request.method == "DELETE":
        state.faults = Faults()
    return JSONResponse(state.faults.model_dump())


async def stats(request: Request) -> JSONResponse:
    """Counters, and BFL's active jobs by key fingerprint and by account; `max_active_seen` is
    each account's peak of simultaneous jobs since the last reset, so a cap can be shown held."""
    state = sim_state(request)
    now = time.time()
    ledger = state.ledger
    ledger.settle(now)
    return JSONResponse(
        {
            "submits": state.submits,
            "result_downloads": state.result_downloads,
            "active": ledger.active_by(now, account=False),
            "active_by_account": ledger.active_by(now, account=True),
            "max_active_seen": dict(ledger.max_active_seen),
        }
    )


async def credits(request: Request) -> JSONResponse:
    """Set the balance of the key's account (both protocols read it; 0 cuts the key off)."""
    parsed = await _parse(request, CreditsUpdate)
    if isinstance(parsed, JSONResponse):
        return parsed
    sim_state(request).ledger.set_balance(parsed.key, parsed.credits)
    return JSONResponse({"key": parsed.key, "credits": parsed.credits})


async def reset(request: Request) -> Response:
    sim_state(request).reset()
    return Response(status_code=204)


routes = [
    Route("/_sim/requests", requests, methods=["GET", "DELETE"]),
    Route("/_sim/results", results, methods=["GET", "DELETE"]),
    Route("/_sim/results/{result_id}", result_bytes, methods=["GET"]),
    Route("/_sim/faults", faults, methods=["GET", "PUT", "DELETE"]),
    Route("/_sim/stats", stats, methods=["GET"]),
    Route("/_sim/credits", credits, methods=["POST"]),
    Route("/_sim/reset", reset, methods=["POST"]),
]
