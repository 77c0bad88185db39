"""Durable links: `GET /images/{id}.{ext}`, no key needed, immutable, with Range support.

A link is the same whatever the backend. A recent image is answered from memory in one piece
(`cache.hot`), any other is streamed from the cache, or, with
`cache.redirect` on a backend that can sign URLs, the answer is a 302 to a presigned URL
signed anew on each request, so the link itself never expires. Every answer says
`nosniff`: a browser shows the bytes only as the image type the gateway checked.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.responses import ErrorHandler
from gateway.cache.base import IMMUTABLE, ByteRange, ResultCache, StoredImage, prepend
from gateway.errors import NotFound
from gateway.links import IMAGE_PATH, Links
from gateway.settings import CacheSettings

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
POSITION_DIGITS = 18
"""A byte position with more significant digits than this is past the end of any image."""
BEYOND = 10**POSITION_DIGITS
NOSNIFF = {"x-content-type-options": "nosniff"}
LINK_METHODS = ("GET", "HEAD")


class Unsatisfiable(Exception):
    """The Range asks for bytes past the end of the image (416)."""


class ImageFiles:
    """`GET /images/{name}`, bound to the links, the cache and its delivery settings."""

    def __init__(self, links: Links, cache: ResultCache, settings: CacheSettings) -> None:
        self.links = links
        self.cache = cache
        self.settings = settings

    async def get_image(self, request: Request) -> Response:
        image = await self.links.by_name(request.path_params["name"])
        if image is None:
            raise NotFound("No such image.")
        etag = f'"{image.sha256}"'
        headers = {"etag": etag, "cache-control": IMMUTABLE, "accept-ranges": "bytes", **NOSNIFF}
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        if self.settings.redirect:
            ttl_s = self.settings.presign_ttl_s
            url = await self.cache.presign(image, ttl_s)
            if url is not None:
                cache_control = {"cache-control": f"public, max-age={int(ttl_s / 2)}"}
                return RedirectResponse(url, status_code=302, headers={**cache_control, **NOSNIFF})
        try:
            byte_range = _requested_range(request, etag, image.size)
        except Unsatisfiable:
            headers["content-range"] = f"bytes */{image.size}"
            return Response(status_code=416, headers=headers)
        status = 200
        first, last = byte_range or (0, image.size - 1)
        if byte_range is not None:
            status = 206
            headers["content-range"] = f"bytes {first}-{last}/{image.size}"
        headers["content-length"] = str(last - first + 1)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=image.content_type)
        try:
            whole = await self.cache.whole(image)
        except FileNotFoundError:
            raise NotFound("No such image.") from None
        if whole is not None:
            body = memoryview(whole)[first : last + 1]
            return Response(
                body, status_code=status, headers=headers, media_type=image.content_type
            )
        chunks = await _opened(self.cache, image, byte_range)
        return StreamingResponse(
            chunks, status_code=status, headers=headers, media_type=image.content_type
        )


class ImageLane:
    """Pure ASGI, right after the request context: durable-link GETs and HEADs are answered
    here, past the API's middleware (client keys, team limits, body checks), which a link needs
    none of — a link is fetched far more often than an image is made. Errors are rendered by
    the app's own handlers (`errors`, by exception class), so they read and are listed exactly
    as on the usual path."""

    def __init__(
        self, app: ASGIApp, route: Route, errors: Mapping[type[Exception], ErrorHandler]
    ) -> None:
        self.app = app
        self.route = route
        self.errors = errors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path.startswith(IMAGE_PATH):
            name = path[len(IMAGE_PATH) :]
            if name and "/" not in name and scope["method"] in LINK_METHODS:
                scope["path_params"] = {"name": name}
                scope["route"] = self.route
                request = Request(scope, receive)
                try:
                    response = await self.route.endpoint(request)
                except Exception as exc:
                    response = await self._handler(exc)(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _handler(self, exc: Exception) -> ErrorHandler:
        """The handler of the nearest class of `exc`, as Starlette looks it up."""
        return next(self.errors[kind] for kind in type(exc).__mro__ if kind in self.errors)


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return etag in tags or "*" in tags


def _requested_range(request: Request, etag: str, size: int) -> ByteRange | None:
    """One `bytes=` range, clipped to the image; anything else is answered with all of it."""
    header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if header is None or (if_range is not None and if_range.strip() != etag):
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    start, end = match.groups()
    if not start:
        suffix = _position(end)
        if suffix == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size - 1
    first = _position(start)
    last = min(_position(end), size - 1) if end else size - 1
    if first > last:
        if end and _position(end) < first:
            return None
        raise Unsatisfiable
    return first, last


def _position(digits: str) -> int:
    """A byte position; one too long for any image (or for `int`, past 4,300 digits) is BEYOND."""
    significant = digits.lstrip("0") or "0"
    return int(significant) if len(significant) <= POSITION_DIGITS else BEYOND


async def _opened(
    cache: ResultCache, image: StoredImage, byte_range: ByteRange | None
) -> AsyncIterator[bytes]:
    """The body, with its first chunk already read: a missing or failing store is answered
    with a real status (404, 503) rather than a broken 200."""
    chunks = cache.open(image, byte_range)
    try:
        head = await anext(chunks, b"")
    except FileNotFoundError:
        raise NotFound("No such image.") from None
    return prepend(head, chunks)
