"""One budget for the bytes of request bodies the whole gateway holds at a time.

`server.max_body_mb` bounds one body; nothing bounded them together, so 20 clients sending
90 MB each made the process hold 2 GB before any of them was looked at. Each request takes
its share of `server.max_inflight_body_mb` before its body is read — all of it at once when
it declares a Content-Length, chunk by chunk when it streams — and gives it back when it
ends, because its parsed body lives as long as the request. A request that does not fit gets
a retryable 503 `server_busy`. The budget is never smaller than one largest allowed body, so
such a body can always pass on its own. Each process has its own budget (`--workers N`: N).
It counts bytes received, while a body is held about twice at its peak: its bytes until they
are parsed and the parsed body, then the parsed body and its upstream encoding while that is
sent, piece by piece (data URLs are checked slice by slice, never decoded whole): the process
peaks near 2× the budget under such bodies (`bench/attack.py`, `bench/edits.py`).
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.responses import error_response
from gateway.errors import ServiceUnavailable
from gateway.settings import ServerSettings

MIB = 1024 * 1024


class BodyBudget:
    """The bytes taken out of a fixed total; taking fails rather than waits."""

    def __init__(self, total_bytes: int) -> None:
        self.total = total_bytes
        self.held = 0

    @classmethod
    def for_server(cls, server: ServerSettings) -> BodyBudget:
        """`max_inflight_body_mb`, but never less than one body of `max_body_mb`."""
        return cls(int(max(server.max_inflight_body_mb, server.max_body_mb) * MIB))

    def take(self, size: int) -> bool:
        if self.held + size > self.total:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held -= size


def _busy() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The gateway is receiving too many request bodies at once; retry the request.",
        code="server_busy",
        headers={"retry-after": "1", "x-should-retry": "true", "connection": "close"},
    )


class BodyBudgetGate:
    """Takes each request body's bytes from the shared `BodyBudget` and gives them back."""

    def __init__(self, app: ASGIApp, budget: BodyBudget) -> None:
        self.app = app
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None and not self.budget.take(declared):
            await error_response(_busy())(scope, receive, send)
            return
        taken = declared or 0

        async def counted() -> Message:
            nonlocal taken
            message = await receive()
            size = len(message.get("body", b""))
            if declared is None and size:
                if not self.budget.take(size):
                    raise _busy()
                taken += size
            return message

        try:
            await self.app(scope, receive if declared is not None else counted, send)
        finally:
            self.budget.give(taken)
