"""BFL's request bodies as pydantic models, so 422 answers have the real API's shape.

FLUX.2 takes width/height (`anyOf[int >= 64, null]`, multiples of 16, any ratio; null or absent
is auto and an explicit 0 fails, sizes above 4 MP are scaled down later, never refused) and up to
8 references (klein 4); Kontext takes an aspect ratio and up to 4 references. Unknown fields are
refused, so a gateway that leaks one fails its tests here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.sim.references import parse_reference
from gateway.sim.sizes import MIN_SIDE, STEP, parse_ratio

Image = str | None
Side = Annotated[int, Field(ge=MIN_SIDE, multiple_of=STEP)] | None
OutputFormat = Literal["jpeg", "png", "webp"]


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
    width: Side = None
    height: Side = None
    safety_tolerance: int = Field(default=2, ge=0, le=5)
    output_format: OutputFormat = "jpeg"


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
    output_format: OutputFormat = "png"
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
