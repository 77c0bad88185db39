"""HTTP/1.1 connections that cannot hold the gateway: capped request heads, a head deadline.

uvicorn's httptools protocol parses a request head of any size and any number of fields, and
only times out a connection that is idle after a response: one that sends nothing, or its
head a byte at a time (slowloris), is held for as long as the client likes. This protocol
answers 431 once a head passes `max_header_bytes` (request line included) or
`max_header_fields`, and closes a connection whose head is not complete `header_timeout_s`
after it opened or after its previous answer (408 if part of a head had arrived).
"""

from __future__ import annotations

import asyncio
import functools
import http
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.errors import GatewayError, HeadersTooLarge, RequestTimeout


class _TooManyFields(Exception):
    """Raised from the parser's header callback; the parser reports it as a parse error."""


@dataclass(frozen=True)
class HeadLimits:
    max_header_bytes: int
    max_header_fields: int
    header_timeout_s: float


def protocol_factory(limits: HeadLimits) -> functools.partial[EdgeProtocol]:
    """What uvicorn's `http` option takes: it calls it with its own keyword arguments."""
    return functools.partial(EdgeProtocol, limits=limits)


def raw_response(error: GatewayError) -> bytes:
    """An OpenAI-shaped error written straight to the socket, before any ASGI request exists."""
    body = orjson.dumps(error.body())
    head = (
        f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: req_{secrets.token_hex(12)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


class EdgeProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.head_bytes: int | None = 0
        self.head_fields = 0
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_bytes is None:
            super().data_received(data)
            return
        room = self.limits.max_header_bytes - self.head_bytes
        if len(data) <= room:
            self.head_bytes += len(data)
            super().data_received(data)
            return
        # Feed only what fits: if the head ends inside it, the rest is body or the next request.
        super().data_received(data[:room])
        if self.head_bytes is not None:
            kib = self.limits.max_header_bytes // 1024
            self._refuse(HeadersTooLarge(f"The request headers are larger than {kib} KiB."))
        elif not self.transport.is_closing():
            super().data_received(data[room:])

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_fields += 1
        if self.head_fields > self.limits.max_header_fields:
            raise _TooManyFields
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        self._disarm_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes, self.head_fields = 0, 0

    def on_response_complete(self) -> None:
        waiting = bool(self.pipeline)
        super().on_response_complete()
        if not waiting and not self.transport.is_closing():
            self._arm_deadline()

    def send_400_response(self, msg: str) -> None:
        if self.head_fields > self.limits.max_header_fields:
            error = HeadersTooLarge(
                f"The request has more than {self.limits.max_header_fields} header fields."
            )
            self._refuse(error)
            return
        super().send_400_response(msg)

    def _refuse(self, error: GatewayError) -> None:
        self._disarm_deadline()
        if not self.transport.is_closing():
            self.transport.write(raw_response(error))
            self.transport.close()

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self.head_deadline = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def _disarm_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_late(self) -> None:
        self.head_deadline = None
        if self.head_bytes:
            seconds = f"{self.limits.header_timeout_s:g}"
            self._refuse(RequestTimeout(f"The request headers did not arrive within {seconds} s."))
        elif not self.transport.is_closing():
            self.transport.close()
