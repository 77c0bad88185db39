"""Reading a protocol request once: parse its JSON body and record what arrived."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from starlette.requests import Request

from gateway.sim.state import SimState

RECORDED_HEADERS = ("host", "authorization", "x-key", "content-type")
"""`host` shows which name a client called: the submit host or a regional polling host."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """The body as JSON (`valid` is False when there was a body that did not parse)."""

    body: object
    valid: bool

    def object(self) -> dict[str, object] | None:
        return self.body if self.valid and isinstance(self.body, dict) else None


def sim_state(request: Request) -> SimState:
    state: SimState = request.app.state.sim
    return state


async def receive(request: Request) -> Inbound:
    """Read the body and record the request."""
    raw = await request.body()
    try:
        inbound = Inbound(orjson.loads(raw) if raw else None, valid=True)
    except orjson.JSONDecodeError:
        inbound = Inbound(None, valid=False)
    record(request, inbound.body)
    return inbound


def record(request: Request, body: object) -> None:
    """Append the request to the recorded list tests assert on."""
    sim_state(request).record(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": {
                name: request.headers[name] for name in RECORDED_HEADERS if name in request.headers
            },
            "json": body,
            "time": time.time(),
        }
    )


def bearer_key(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
