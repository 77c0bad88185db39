"""Deterministic images whose look follows the prompt, seed and references.

Same (model, prompt, seed, references, size, format) → the same bytes, so tests can compare
results; Pillow work runs in a worker thread to keep the event loop free.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import anyio.to_thread
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from gateway.sim.references import Reference

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
Colour = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class RenderSpec:
    model: str
    prompt: str
    seed: int
    width: int
    height: int
    output_format: str
    references: tuple[Reference, ...] = ()

    def digest(self) -> str:
        """Everything the picture depends on, hashed: the seed of its randomness."""
        hasher = hashlib.sha256()
        size = f"{self.width}x{self.height}"
        for part in (self.model, self.prompt, str(self.seed), size, self.output_format):
            hasher.update(part.encode() + b"\0")
        for reference in self.references:
            hasher.update(reference.token + b"\0")
        return hasher.hexdigest()


async def render(spec: RenderSpec) -> bytes:
    return await anyio.to_thread.run_sync(draw, spec)


async def noise_png(kib: int) -> bytes:
    """An incompressible PNG of about `kib` KiB: random RGB pixels."""
    return await anyio.to_thread.run_sync(_noise_png, kib)


def _noise_png(kib: int) -> bytes:
    side = max(16, math.isqrt(kib * 1024 // 3))
    image = Image.frombytes("RGB", (side, side), random.Random(kib).randbytes(side * side * 3))
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _colour(rng: random.Random) -> Colour:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def draw(spec: RenderSpec) -> bytes:
    rng = random.Random(spec.digest())
    size = (spec.width, spec.height)
    if rng.random() < 0.3:
        mask = Image.radial_gradient("L")
    else:
        mask = Image.linear_gradient("L").rotate(rng.choice((0, 90, 180, 270)))
    first, second = Image.new("RGB", size, _colour(rng)), Image.new("RGB", size, _colour(rng))
    canvas = Image.composite(first, second, mask.resize(size)).convert("RGBA")
    canvas = Image.alpha_composite(canvas, _shapes(rng, size)).convert("RGB")
    _paste_references(canvas, spec.references)
    _caption(canvas, spec)
    return _encode(canvas, spec.output_format)


def _shapes(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    pen = ImageDraw.Draw(overlay)
    short = min(size)
    for _ in range(rng.randint(6, 14)):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        half = rng.randint(short // 20, short // 4)
        box = (x - half, y - half, x + half, y + half)
        fill = (*_colour(rng), rng.randint(80, 200))
        kind = rng.randrange(3)
        if kind == 0:
            pen.ellipse(box, fill=fill)
        elif kind == 1:
            pen.rectangle(box, fill=fill)
        else:
            pen.polygon([(x, y - half), (x - half, y + half), (x + half, y + half)], fill=fill)
    return overlay


def _paste_references(canvas: Image.Image, references: Sequence[Reference]) -> None:
    if not references:
        return
    width, height = canvas.size
    cell = min(width // max(5, len(references) + 1), height // 4)
    pen = ImageDraw.Draw(canvas)
    for index, reference in enumerate(references):
        left, top = 8 + index * (cell + 8), height - cell - 8
        thumb = _thumbnail(reference, cell)
        if thumb is None:
            shade = tuple(reference.token[:3])
            pen.rectangle((left, top, left + cell, top + cell), fill=shade, outline=(255, 255, 255))
        else:
            canvas.paste(thumb, (left, top))


def _thumbnail(reference: Reference, cell: int) -> Image.Image | None:
    if reference.data is None:
        return None
    try:
        with Image.open(io.BytesIO(reference.data)) as image:
            image.thumbnail((cell, cell))
            return image.convert("RGB")
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def _caption(canvas: Image.Image, spec: RenderSpec) -> None:
    font = ImageFont.load_default(size=max(12, canvas.size[1] // 40))
    text = f"{spec.prompt[:80]}\n{spec.model} · seed {spec.seed}"
    ImageDraw.Draw(canvas).multiline_text(
        (16, 16), text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0)
    )


def _encode(image: Image.Image, output_format: str) -> bytes:
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, "PNG", compress_level=1)
    elif output_format == "webp":
        image.save(buffer, "WEBP", quality=80, method=0)
    else:
        image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
