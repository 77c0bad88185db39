"""The FLUX model catalog: what each model takes on each upstream kind (SPEC §4.2).

This is the one place that knows model limits; validation, routing, `/v1/models` and the
console all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

Kind = Literal["openai-images", "bfl"]
SizeControl = Literal["width_height", "aspect_ratio"]

MAX_REFERENCE_IMAGES = 8
MIN_SIDE = 64
SIDE_STEP = 16
MAX_PIXELS = 4 * 1024 * 1024
KONTEXT_RATIOS = (Fraction(9, 21), Fraction(21, 9))
FLUX2_RATIOS = (Fraction(1, 4), Fraction(4, 1))


@dataclass(frozen=True)
class KindLimits:
    """What one model accepts on one upstream kind."""

    max_images: int
    safety_max: int
    output_formats: tuple[str, ...]
    prompt_upsampling: bool
    size_control: SizeControl
    ratio_range: tuple[Fraction, Fraction] | None
    """The aspect ratios taken; None: any ratio whose sides fit the size rules."""


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: str
    steps: tuple[int, int] | None
    guidance: tuple[float, float] | None
    kinds: dict[Kind, KindLimits] = field(default_factory=dict)
    max_concurrency_per_account: dict[Kind, int] = field(default_factory=dict)
    """Jobs of this model one provider account may run at once, across all its keys."""

    def limits(self, kind: Kind) -> KindLimits:
        return self.kinds[kind]

    def describe(self) -> dict[str, object]:
        """The model's limits as shown at `/v1/models/{id}`."""
        return {
            "family": self.family,
            "steps": list(self.steps) if self.steps else None,
            "guidance": list(self.guidance) if self.guidance else None,
            "upstream_kinds": {
                kind: {
                    "max_reference_images": lim.max_images,
                    "safety_tolerance": [0, lim.safety_max],
                    "output_formats": list(lim.output_formats),
                    "prompt_upsampling": lim.prompt_upsampling,
                    "size_control": lim.size_control,
                    "aspect_ratios": [_ratio_text(r) for r in lim.ratio_range]
                    if lim.ratio_range
                    else None,
                }
                for kind, lim in self.kinds.items()
            },
        }


def _flux2(model_id: str, images: int, flex: bool = False) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family="flux.2",
        steps=(1, 50) if flex else None,
        guidance=(1.5, 10.0) if flex else None,
        kinds={
            "openai-images": KindLimits(
                images, 6, ("jpeg", "png"), True, "aspect_ratio", FLUX2_RATIOS
            ),
            "bfl": KindLimits(images, 5, ("jpeg", "png", "webp"), flex, "width_height", None),
        },
    )


def _kontext(model_id: str) -> ModelSpec:
    return ModelSpec(
        id=model_id,
        family="flux.1-kontext",
        steps=None,
        guidance=None,
        kinds={
            "openai-images": KindLimits(
                1, 6, ("jpeg", "png"), True, "aspect_ratio", KONTEXT_RATIOS
            ),
            "bfl": KindLimits(4, 6, ("jpeg", "png", "webp"), True, "aspect_ratio", KONTEXT_RATIOS),
        },
        max_concurrency_per_account={"bfl": 6} if model_id == "flux-kontext-max" else {},
    )


ACCOUNT_CONCURRENCY: dict[Kind, int] = {"bfl": 24}
"""Jobs one provider account runs at once across its keys, when `max_concurrency` is not set:
BFL counts active tasks per account (SPEC 5); aggregators have no account-wide cap."""

MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        _flux2("flux-2-pro", 8),
        _flux2("flux-2-max", 8),
        _flux2("flux-2-flex", 8, flex=True),
        _flux2("flux-2-klein-9b", 4),
        _flux2("flux-2-klein-4b", 4),
        _kontext("flux-kontext-pro"),
        _kontext("flux-kontext-max"),
    )
}


def _ratio_text(ratio: Fraction) -> str:
    return f"{ratio.numerator}:{ratio.denominator}"


REFERENCE_KEYS: tuple[str, ...] = ("input_image",) + tuple(
    f"input_image_{i}" for i in range(2, MAX_REFERENCE_IMAGES + 1)
)
