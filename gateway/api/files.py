"""Durable links: `GET /images/{id}.{ext}`, no key needed, immutable, with Range support."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from gateway.cache.filesystem import FilesystemCache
from gateway.errors import NotFound
from gateway.service import Gateway

CACHE_CONTROL = "public, max-age=31536000, immutable"


async def get_image(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    image = await gateway.lookup_name(request.path_params["name"])
    if image is None:
        raise NotFound("No such image.")
    headers = {"etag": f'"{image.sha256}"', "cache-control": CACHE_CONTROL}
    if request.headers.get("if-none-match") == headers["etag"]:
        return Response(status_code=304, headers=headers)
    if isinstance(gateway.cache, FilesystemCache):
        return FileResponse(
            gateway.cache.local_path(image), media_type=image.content_type, headers=headers
        )
    headers["content-length"] = str(image.size)
    return StreamingResponse(
        gateway.cache.open(image), media_type=image.content_type, headers=headers
    )
