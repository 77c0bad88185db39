"""Image sizes read from their headers: Pillow parses the header and never decodes pixels.

Reference images arrive as data URLs of up to 20 MB; decoding their base64 and reading the
header run in a worker thread, off the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import anyio.to_thread
from PIL import Image, UnidentifiedImageError

from gateway import media

Size = tuple[int, int]


def size_of(data: bytes) -> Size | None:
    """(width, height) from an image's header, or None when it has no readable one."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def _reference_sizes(values: Sequence[str]) -> list[Size | None]:
    sizes: list[Size | None] = []
    for value in values:
        parsed = media.parse_data_url(value) if value.startswith("data:") else None
        sizes.append(size_of(parsed[1]) if parsed is not None else None)
    return sizes


async def reference_sizes(values: Sequence[str]) -> list[Size | None]:
    """The size of each reference whose bytes the gateway has (data URLs); None for links."""
    if not any(value.startswith("data:") for value in values):
        return [None] * len(values)
    return await anyio.to_thread.run_sync(_reference_sizes, list(values))
