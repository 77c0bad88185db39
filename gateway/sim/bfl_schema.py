"""BFL's request bodies as pydantic models, so 422 answers have the real API's shape.

FLUX.2 takes width/height (0 = auto) and up to 8 references (klein 4); Kontext takes an
aspect ratio and up to 4 references. Unknown fields are refused, as by the real API.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.sim.references import parse_reference
from gateway.sim.render import parse_ratio

MAX_PIXELS = 4 * 1024 * 1024
COSTS = {
    "flux-2-pro": 3.0,
    "flux-2-max": 7.0,
    "flux-2-flex": 5.0,
    "flux-2-klein-4b": 1.4,
    "flux-2-klein-9b": 1.5,
    "flux-kontext-pro": 4.0,
    "flux-kontext-max": 8.0,
}
KONTEXT_MAX_ACTIVE = 6

Image = str | None


def _check_reference(value: str | None) -> str | None:
    if value is not None:
        parse_reference(value, raw_base64=True)
    return value


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    seed: int | None = None
    webhook_url: str | None = Field(default=None, max_length=2083)
    webhook_secret: str | None = None
    input_image: Image = None
    input_image_2: Image = None
    input_image_3: Image = None
    input_image_4: Image = None

    _references = field_validator(
        "input_image", "input_image_2", "input_image_3", "input_image_4", mode="after"
    )(_check_reference)


class Klein(_Base):
    width: int | None = None
    height: int | None = None
    safety_tolerance: int = Field(default=2, ge=0, le=5)
    output_format: Literal["jpeg", "png", "webp"] = "jpeg"

    @field_validator("width", "height", mode="after")
    @classmethod
    def _dimension(cls, value: int | None) -> int | None:
        if value:
            if value < 64:
                raise ValueError("must be at least 64 (or 0 for auto)")
            if value % 16:
                raise ValueError("must be a multiple of 16")
        return value

    @model_validator(mode="after")
    def _area(self) -> Klein:
        if self.width and self.height and self.width * self.height > MAX_PIXELS:
            raise ValueError(f"width * height must be at most {MAX_PIXELS} pixels")
        return self


class Flux2(Klein):
    input_image_5: Image = None
    input_image_6: Image = None
    input_image_7: Image = None
    input_image_8: Image = None

    _more_references = field_validator(
        "input_image_5", "input_image_6", "input_image_7", "input_image_8", mode="after"
    )(_check_reference)


class Flex(Flux2):
    prompt_upsampling: bool = True
    guidance: float = Field(default=4.5, ge=1.5, le=10)
    steps: int = Field(default=50, ge=1, le=50)


class Kontext(_Base):
    aspect_ratio: str | None = None
    output_format: Literal["jpeg", "png"] = "png"
    prompt_upsampling: bool = False
    safety_tolerance: int = Field(default=2, ge=0, le=6)

    @field_validator("aspect_ratio", mode="after")
    @classmethod
    def _ratio(cls, value: str | None) -> str | None:
        if value is None:
            return value
        ratio = parse_ratio(value)
        if ratio is None or not 9 / 21 <= ratio[0] / ratio[1] <= 21 / 9:
            raise ValueError("must be a ratio between 21:9 and 9:21")
        return value


SCHEMAS: dict[str, type[_Base]] = {
    "flux-2-pro": Flux2,
    "flux-2-max": Flux2,
    "flux-2-flex": Flex,
    "flux-2-klein-4b": Klein,
    "flux-2-klein-9b": Klein,
    "flux-kontext-pro": Kontext,
    "flux-kontext-max": Kontext,
}
