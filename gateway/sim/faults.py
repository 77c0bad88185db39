"""The submit-time faults both protocols share; each protocol words the answer its own way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request

from gateway.sim.state import SimState


@dataclass(frozen=True, slots=True)
class Rejection:
    status: int
    reason: Literal["hang", "rate_limited", "no_credit", "failure"]
    retry_after: float | None = None

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": f"{self.retry_after:g}"}


async def submit_rejection(request: Request, state: SimState, key: str) -> Rejection | None:
    """The fault a submit with this (valid) key must answer, if any.

    `hang` holds the request until the client goes away, like an upstream that never answers.
    """
    faults = state.faults
    if faults.hang:
        while (await request.receive())["type"] != "http.disconnect":
            continue
        return Rejection(504, "hang")
    if key in faults.rate_limit_keys:
        return Rejection(429, "rate_limited", faults.rate_limit_keys[key])
    if key in faults.no_credit_keys:
        return Rejection(402, "no_credit")
    status = state.take_fail_status()
    if status is not None:
        return Rejection(status, "failure")
    return None
