"""Signed result links that die after a TTL, like the upstreams' delivery blob URLs.

The route also plays the download faults: slow, truncated, oversized, not-an-image, 5xx.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import struct
import time
import zlib
from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.sim.inbound import record, sim_state
from gateway.sim.state import SimState, StoredImage

CHUNK = 16 * 1024
_IHDR = b"IHDR" + struct.pack(">IIBBBBB", 4096, 4096, 8, 2, 0, 0, 0)
PNG_HEAD = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + _IHDR + zlib.crc32(_IHDR).to_bytes(4)
NOT_AN_IMAGE = b"<html><body>This is not an image.</body></html>\n"
_BLOB_ERROR = (
    '<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error>"
)


def _signature(secret: str, result_id: str, ext: str, exp: str) -> str:
    message = f"{result_id}/sample.{ext}?exp={exp}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def result_link(
    request: Request, state: SimState, result_id: str, origin: str | None = None
) -> str:
    """A link valid for the TTL on `origin` (a base URL; default the request's own) or on the
    `result_host` fault's host."""
    ext = state.results[result_id].output_format
    expires = round(time.time() + state.url_ttl, 3)
    exp = f"{expires:.3f}"
    host = state.faults.result_host
    base = f"{request.url.scheme}://{host}/" if host else origin or str(request.base_url)
    signature = _signature(state.config.signing_secret, result_id, ext, exp)
    url = f"{base}results/{result_id}/sample.{ext}?exp={exp}&sig={signature}"
    state.note_link(result_id, url, expires)
    return url


def _blob_error(status: int, code: str, message: str) -> Response:
    body = _BLOB_ERROR.format(code=code, message=message)
    return Response(body, status, media_type="application/xml")


def _link_valid(state: SimState, request: Request, result_id: str, ext: str) -> bool:
    exp = request.query_params.get("exp", "")
    expected = _signature(state.config.signing_secret, result_id, ext, exp)
    if not hmac.compare_digest(expected, request.query_params.get("sig", "")):
        return False
    try:
        return float(exp) > time.time()
    except ValueError:
        return False


class SampleResponse(Response):
    """Streams a body in chunks, optionally late, slowly, or cut off after half of it."""

    def __init__(
        self, chunks: Iterator[bytes], length: int, media_type: str, state: SimState
    ) -> None:
        super().__init__(None, 200, {"content-length": str(length)}, media_type)
        self.chunks = chunks
        self.delay = state.faults.result_delay
        self.chunk_delay = state.faults.result_chunk_delay
        self.limit = length // 2 if state.faults.result_truncate else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await send(start)
        if self.delay:
            await asyncio.sleep(self.delay)
        sent = 0
        for chunk in self.chunks:
            if self.limit is not None and sent + len(chunk) >= self.limit:
                part = chunk[: self.limit - sent]
                await send({"type": "http.response.body", "body": part, "more_body": True})
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += len(chunk)
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _split(data: bytes) -> Iterator[bytes]:
    for offset in range(0, len(data), CHUNK):
        yield data[offset : offset + CHUNK]


def _oversize(length: int) -> Iterator[bytes]:
    yield PNG_HEAD
    filler = bytes(CHUNK * 4)
    for offset in range(len(PNG_HEAD), length, len(filler)):
        yield filler[: length - offset]


def _body(state: SimState, image: StoredImage) -> tuple[Iterator[bytes], int, str]:
    faults = state.faults
    if faults.result_oversize_mb is not None:
        length = int(faults.result_oversize_mb * 1024 * 1024)
        return _oversize(length), length, "image/png"
    if faults.result_not_image:
        return _split(NOT_AN_IMAGE), len(NOT_AN_IMAGE), "image/png"
    return _split(image.data), len(image.data), image.content_type


async def download(request: Request) -> Response:
    state = sim_state(request)
    record(request, None)
    state.result_downloads += 1
    result_id, ext = request.path_params["result_id"], request.path_params["ext"]
    if not _link_valid(state, request, result_id, ext):
        return _blob_error(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Signature invalid or expired.",
        )
    status = state.take_result_status()
    if status is not None:
        return _blob_error(status, "InternalError", "The server encountered an internal error.")
    image = state.results.get(result_id)
    if image is None or image.output_format != ext:
        return _blob_error(404, "BlobNotFound", "The specified blob does not exist.")
    return SampleResponse(*_body(state, image), state)


routes = [Route("/results/{result_id}/sample.{ext}", download, methods=["GET"])]
