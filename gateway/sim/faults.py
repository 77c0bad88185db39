"""The submit-time faults both protocols share; each protocol words the answer its own way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

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


class CutOff(JSONResponse):
    """An accepted job whose answer breaks off halfway: the connection drops after half the
    declared body, like an upstream that charged the job and then lost the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})


def answered(state: SimState, content: object) -> JSONResponse:
    """The answer to an accepted job, cut off when the `answer_cut_off` fault is on."""
    return CutOff(content) if state.faults.answer_cut_off else JSONResponse(content)
