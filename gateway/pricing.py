"""What a job costs, in micro-USD (SPEC 6): per megapixel for FLUX.2, per image for the rest.

A table entry `{first_mp, extra_mp, input_mp}` costs `first_mp + extra_mp × (output MP − 1) +
input_mp × (MP of all references)`, every image's MP (1,048,576 pixels) rounded up on its own;
a plain number is per output image. The upstream's own reported figure wins over the table.
Admission reserves an upper bound from what the request asks for; settlement charges what was
delivered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.catalog import MAX_PIXELS, MIN_SIDE, SIDE_STEP
from gateway.settings import MegapixelPrice, Price

MEGAPIXEL = 1024 * 1024
MICROS = 1_000_000
UNKNOWN_REFERENCE_MP = 4
"""An https reference the gateway never fetches counts as the largest FLUX.2 takes."""
FOLLOWS_REFERENCE_MP = 4
"""With references and no size, the output follows the first reference: up to 4 MP."""
DEFAULT_OUTPUT = (1024, 1024)


def usd(micros: int) -> float:
    """Micro-USD as dollars for answers and reports (six decimals: exact to the micro-dollar)."""
    return round(micros / MICROS, 6)


def megapixels(width: int, height: int) -> int:
    """Whole megapixels as BFL bills them: rounded up, one at the least."""
    return max(1, math.ceil(width * height / MEGAPIXEL))


@dataclass(frozen=True)
class JobSize:
    """What one job's price depends on: its output and its references, in whole MP."""

    output_mp: int
    input_mp: int


def cost_micros(price: Price, size: JobSize) -> int:
    """The table price of one job."""
    if isinstance(price, MegapixelPrice):
        usd = (
            price.first_mp + price.extra_mp * (size.output_mp - 1) + price.input_mp * size.input_mp
        )
    else:
        usd = price
    return round(usd * MICROS)


def credits_micros(credits: float) -> int:
    """BFL's reported cost: 1 credit is one US cent."""
    return round(credits * MICROS / 100)


class PriceTable:
    """`[prices]` with BFL's list prices beneath, and each upstream's own `prices` above."""

    def __init__(
        self, prices: Mapping[str, Price], per_upstream: Mapping[str, Mapping[str, Price]]
    ) -> None:
        self.prices = dict(prices)
        self.per_upstream = {name: dict(table) for name, table in per_upstream.items()}

    def price(self, upstream: str, model: str) -> Price:
        own = self.per_upstream.get(upstream, {})
        if model in own:
            return own[model]
        return self.prices.get(model, 0.0)

    def cost(self, upstream: str, model: str, size: JobSize) -> int:
        return cost_micros(self.price(upstream, model), size)


def requested_output_mp(body: Mapping[str, Any], has_references: bool) -> int:
    """An upper bound of the output size an upstream body asks for (before any upstream runs)."""
    width, height = body.get("width"), body.get("height")
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return megapixels(*_within_limit(width, height))
    ratio = body.get("aspect_ratio")
    if isinstance(ratio, str) and ":" in ratio:
        across, _, down = ratio.partition(":")
        return megapixels(*_about_one_megapixel(int(across), int(down)))
    if has_references:
        return FOLLOWS_REFERENCE_MP
    return megapixels(*DEFAULT_OUTPUT)


def input_mp(reference_sizes: Sequence[tuple[int, int] | None]) -> int:
    """The references' whole MP; None is a reference whose size the gateway cannot know."""
    return sum(UNKNOWN_REFERENCE_MP if s is None else megapixels(*s) for s in reference_sizes)


def _about_one_megapixel(across: int, down: int) -> tuple[int, int]:
    """The size an aspect ratio gives by default: about 1 MP in multiples of 16."""
    width = math.sqrt(MEGAPIXEL * across / down)
    height = math.sqrt(MEGAPIXEL * down / across)
    return _round16(width), _round16(height)


def _within_limit(width: int, height: int) -> tuple[int, int]:
    if width * height <= MAX_PIXELS:
        return width, height
    scale = math.sqrt(MAX_PIXELS / (width * height))
    return (
        math.floor(width * scale / SIDE_STEP) * SIDE_STEP,
        math.floor(height * scale / SIDE_STEP) * SIDE_STEP,
    )


def _round16(value: float) -> int:
    return max(MIN_SIDE, round(value / SIDE_STEP) * SIDE_STEP)
