"""The body an image request answers (SPEC 4.3), built once for both ways of asking.

A synchronous request answers it at once; an async job stores it as its `result`. Both call
`image_body`, so the two are the same bytes by construction.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.cache import StoredImage
from gateway.pipeline import Delivered, ImagePipeline

EXTENSION_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp"}


def stored_shape(image: StoredImage) -> dict[str, str]:
    """`output_format` and `size` of what was stored, as gpt-image answers carry them."""
    shape = {"output_format": EXTENSION_FORMATS[image.content_type]}
    if image.width:
        shape["size"] = f"{image.width}x{image.height}"
    return shape


async def image_body(
    pipeline: ImagePipeline, delivered: list[Delivered], response_format: str
) -> dict[str, Any]:
    """`{"created", "data", "output_format", "size"}` for what was delivered, in order."""
    data = [await pipeline.item(d, response_format) for d in delivered]
    return {"created": int(time.time()), "data": data, **stored_shape(delivered[0].image)}
