"""BFL's list prices, and the `cost`, `input_mp` and `output_mp` its submit answer reports.

FLUX.2 is priced per megapixel: `first_mp + extra_mp × (output MP − 1) + input_mp × (sum of the
references' MP)`, where each image's MP (1,048,576 pixels) is rounded up to a whole number on its
own. Kontext costs one price an image, whatever its references. Figures are in USD here and
reported in credits (1 credit = $0.01); Decimal keeps 0.03 + 0.015 exactly 4.5 credits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from gateway.sim.sizes import MEGAPIXEL, Size

CREDITS_PER_USD = 100
UNREAD_MP = 1
"""A reference whose size the simulator cannot read (an http(s) URL it never fetches, or bytes
with a broken header) is priced and reported as one megapixel."""


@dataclass(frozen=True, slots=True)
class PerMegapixel:
    first_mp: Decimal
    extra_mp: Decimal
    input_mp: Decimal


def _per_mp(first: str, extra: str, reference: str) -> PerMegapixel:
    return PerMegapixel(Decimal(first), Decimal(extra), Decimal(reference))


PRICES_USD: dict[str, PerMegapixel | Decimal] = {
    "flux-2-klein-4b": _per_mp("0.014", "0.001", "0.001"),
    "flux-2-klein-9b": _per_mp("0.015", "0.002", "0.002"),
    "flux-2-pro": _per_mp("0.03", "0.015", "0.015"),
    "flux-2-max": _per_mp("0.07", "0.03", "0.03"),
    "flux-2-flex": _per_mp("0.05", "0.05", "0.05"),
    "flux-kontext-pro": Decimal("0.04"),
    "flux-kontext-max": Decimal("0.08"),
}


def whole_megapixels(size: Size | None) -> int:
    """The MP an image is priced at: its pixels over 1,048,576, rounded up."""
    if size is None:
        return UNREAD_MP
    return -(-size[0] * size[1] // MEGAPIXEL)


def cost_credits(model: str, output: Size, references: Sequence[Size | None]) -> float:
    """What BFL's list prices charge for this job, in credits."""
    price = PRICES_USD[model]
    if isinstance(price, Decimal):
        usd = price
    else:
        further = whole_megapixels(output) - 1
        inputs = sum(whole_megapixels(size) for size in references)
        usd = price.first_mp + price.extra_mp * further + price.input_mp * inputs
    return float(usd * CREDITS_PER_USD)


def reported_megapixels(sizes: Sequence[Size | None]) -> float:
    """`input_mp` / `output_mp` as the submit answer gives them: the exact MP (not the rounded-up
    figure prices use), summed, to two decimals like BFL's schema; unreadable images count 1."""
    total = sum(UNREAD_MP if size is None else size[0] * size[1] / MEGAPIXEL for size in sizes)
    return round(total, 2)
