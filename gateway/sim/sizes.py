"""Image sizes as the upstreams work them out: ratios, reference headers and BFL's 4 MP ceiling.

Reference sizes come from the image header (Pillow opens lazily and never decodes pixels), in a
worker thread so the event loop stays free.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import anyio.to_thread
from PIL import Image, UnidentifiedImageError

from gateway.sim.references import Reference

MEGAPIXEL = 1024 * 1024
MAX_PIXELS = 4 * MEGAPIXEL
MIN_SIDE = 64
STEP = 16
Size = tuple[int, int]


def parse_ratio(text: str) -> tuple[int, int] | None:
    """`"16:9"` → (16, 9); None for anything else."""
    width, sep, height = text.partition(":")
    if not sep or not width.isdigit() or not height.isdigit():
        return None
    if int(width) == 0 or int(height) == 0:
        return None
    return int(width), int(height)


def round16(value: float) -> int:
    return max(MIN_SIDE, int(round(value / STEP)) * STEP)


def fit(ratio: tuple[int, int], area: int = MEGAPIXEL) -> Size:
    """Dimensions of about `area` pixels in `ratio`, multiples of 16."""
    width, height = ratio
    return round16(math.sqrt(area * width / height)), round16(math.sqrt(area * height / width))


def within_limit(width: int, height: int, limit: int = MAX_PIXELS) -> Size:
    """The size itself when it fits in `limit` pixels, else the largest multiple-of-16 size within
    it that keeps the ratio (BFL scales FLUX.2 outputs above 4 MP down this way, never refuses).

    The shorter side is tried rounded down and up to a step of 16; the longer side follows the
    ratio, rounded to the nearest step but never past the limit; the larger area wins.
    """
    if width * height <= limit:
        return width, height
    short, long = sorted((width, height))
    scale = math.sqrt(limit / (width * height))
    best = (0, 0)
    for side in (math.floor(short * scale / STEP), math.ceil(short * scale / STEP)):
        candidate_short = max(MIN_SIDE, side * STEP)
        ceiling = limit // candidate_short // STEP * STEP
        candidate_long = min(round16(candidate_short * long / short), ceiling)
        if candidate_short * candidate_long > best[0] * best[1]:
            best = (candidate_short, candidate_long)
    return best if width <= height else (best[1], best[0])


def _header_sizes(references: Sequence[Reference]) -> list[Size | None]:
    return [_header_size(reference) for reference in references]


def _header_size(reference: Reference) -> Size | None:
    if reference.data is None:
        return None
    try:
        with Image.open(io.BytesIO(reference.data)) as image:
            return image.size
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


async def reference_sizes(references: Sequence[Reference]) -> list[Size | None]:
    """Each reference's (width, height) from its header; None for URLs (never fetched) and for
    bytes whose header cannot be read."""
    return await anyio.to_thread.run_sync(_header_sizes, references)


def output_size(
    sizes: Sequence[Size | None],
    aspect_ratio: str | None = None,
    width: int | None = None,
    height: int | None = None,
) -> Size:
    """Explicit width/height, else `aspect_ratio`, else the first readable reference's ratio,
    else square; about one megapixel, never above 4 MP."""
    if width and height:
        return within_limit(width, height)
    ratio = parse_ratio(aspect_ratio) if aspect_ratio else None
    if ratio is None:
        ratio = next((size for size in sizes if size is not None), (1, 1))
    if width:
        return within_limit(width, round16(width * ratio[1] / ratio[0]))
    if height:
        return within_limit(round16(height * ratio[0] / ratio[1]), height)
    return fit(ratio)
