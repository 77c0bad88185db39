"""Image sizes read from their headers: Pillow parses the header and never decodes pixels.

Reference images arrive as data URLs of up to 20 MB, already checked whole when the request
was validated; their size needs only the start of their bytes, so only that is decoded (all
of it only when the header lies further in), in one worker-thread call per request.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import anyio.to_thread
from PIL import Image, UnidentifiedImageError

from gateway import media, offload

Size = tuple[int, int]
HEADER_BYTES = 64 * 1024
"""Enough for the header of PNG and of nearly every JPEG (EXIF comes first); else all of it."""
PROBE_BYTES = 4096
"""What a result's header is first looked for in, on the event loop."""


def size_of(data: bytes) -> Size | None:
    """(width, height) from an image's header, or None when it has no readable one."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    return (width, height) if width > 0 and height > 0 else None


async def result_size(data: bytes) -> Size | None:
    """The size of a downloaded result: from its first `PROBE_BYTES` on the event loop when
    the header lies there (Pillow's walk of 4 KiB is bounded, tens of µs, cheaper than a thread
    hop), else from all of it in a worker thread (a WebP, a JPEG with long metadata)."""
    size = size_of(data[:PROBE_BYTES])
    if size is None and len(data) > PROBE_BYTES:
        size = await anyio.to_thread.run_sync(size_of, data)
    return size


def data_url_size(url: str) -> Size | None:
    """The size of a data URL's image, from its first bytes when they hold the header."""
    head = media.data_url_head(url, HEADER_BYTES)
    if head is None:
        return None
    size = size_of(head)
    if size is None and len(head) >= HEADER_BYTES:
        parsed = media.parse_data_url(url)
        size = size_of(parsed[1]) if parsed is not None else None
    return size


def _reference_sizes(values: Sequence[str]) -> list[Size | None]:
    sizes: list[Size | None] = []
    for index, value in enumerate(values):
        if index:
            offload.breathe()
        sizes.append(data_url_size(value) if value.startswith("data:") else None)
    return sizes


async def reference_sizes(values: Sequence[str]) -> list[Size | None]:
    """The size of each reference whose bytes the gateway has (data URLs); None for links."""
    urls = sum(len(value) for value in values if value.startswith("data:"))
    if not urls:
        return [None] * len(values)
    return await offload.run(urls, _reference_sizes, list(values))
