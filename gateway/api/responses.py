"""Response helpers: orjson bodies and the one OpenAI error envelope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import GatewayError

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
"""An app's exception handler: the error envelope for an exception raised by a handler."""


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(exc: GatewayError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        exc.body(), status_code=exc.status, headers={**exc.headers, **(headers or {})}
    )
