"""A validated request + a model + an upstream kind → the exact upstream body, or a 400.

Sizes become what the kind takes (`aspect_ratio` on the aggregator and Kontext, `width` and
`height` for FLUX.2 on BFL); every BFL-native field is checked against the model's limits on
that kind. No defaults are added: what the client did not say, the upstream decides.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any

from gateway.catalog import MAX_PIXELS, MIN_SIDE, REFERENCE_KEYS, SIDE_STEP, Kind, ModelSpec
from gateway.errors import InvalidRequest
from gateway.requests import ParsedRequest

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_RATIO = re.compile(r"^(\d{1,5}):(\d{1,5})$")
DEFAULT_PIXELS = 1024 * 1024


def shape(parsed: ParsedRequest, spec: ModelSpec, kind: Kind) -> dict[str, Any]:
    """The upstream JSON body (without the per-job seed) for `spec` on an upstream of `kind`."""
    req = parsed.body
    limits = spec.limits(kind)
    if len(parsed.references) > limits.max_images:
        raise InvalidRequest(
            f"{spec.id} takes at most {limits.max_images} reference image(s) on this upstream.",
            param=REFERENCE_KEYS[limits.max_images],
            code="too_many_images",
        )
    body: dict[str, Any] = {"model": spec.id, "prompt": req.prompt}
    refs = parsed.references
    body.update({key: ref.value for key, ref in zip(REFERENCE_KEYS, refs, strict=False)})
    body.update(_size_fields(parsed, spec, kind))
    if req.safety_tolerance is not None:
        if req.safety_tolerance > limits.safety_max:
            raise _out_of_range("safety_tolerance", spec, 0, limits.safety_max)
        body["safety_tolerance"] = req.safety_tolerance
    elif req.moderation == "low":
        body["safety_tolerance"] = limits.safety_max
    if req.output_format is not None:
        if req.output_format not in limits.output_formats:
            raise InvalidRequest(
                f"{spec.id} supports output_format {', '.join(limits.output_formats)} here.",
                param="output_format",
            )
        body["output_format"] = req.output_format
    if req.prompt_upsampling is not None:
        if not limits.prompt_upsampling:
            raise _not_taken("prompt_upsampling", spec)
        body["prompt_upsampling"] = req.prompt_upsampling
    for name, bounds in (("steps", spec.steps), ("guidance", spec.guidance)):
        value = getattr(req, name)
        if value is None:
            continue
        if bounds is None:
            raise _not_taken(name, spec)
        if not bounds[0] <= value <= bounds[1]:
            raise _out_of_range(name, spec, *bounds)
        body[name] = value
    return body


def _not_taken(param: str, spec: ModelSpec) -> InvalidRequest:
    return InvalidRequest(
        f"{spec.id} does not take '{param}'.", param=param, code="unsupported_parameter"
    )


def _out_of_range(param: str, spec: ModelSpec, low: float, high: float) -> InvalidRequest:
    return InvalidRequest(
        f"'{param}' must be between {low:g} and {high:g} for {spec.id}.", param=param
    )


def _size_fields(parsed: ParsedRequest, spec: ModelSpec, kind: Kind) -> dict[str, Any]:
    req = parsed.body
    given = [name for name in ("size", "aspect_ratio") if getattr(req, name) not in (None, "auto")]
    if req.width is not None or req.height is not None:
        given.append("width")
    if len(given) > 1:
        raise InvalidRequest(
            f"Give only one of size, aspect_ratio or width/height (got {', '.join(given)}).",
            param=given[1],
        )
    if not given:
        return {}
    limits = spec.limits(kind)
    wants_pixels = limits.size_control == "width_height"
    if given[0] == "width":
        return _from_width_height(req.width, req.height, spec, kind)
    if given[0] == "size":
        width, height = _parse_size(req.size or "")
        ratio = _ratio(width, height, "size", spec, kind)
        if wants_pixels:
            return _fit_pixels(width, height)
        return {"aspect_ratio": _ratio_text(ratio)}
    ratio = _parse_ratio(req.aspect_ratio or "", spec, kind)
    if wants_pixels:
        side = math.sqrt(DEFAULT_PIXELS * ratio)
        return _fit_pixels(round(side), round(side / ratio))
    return {"aspect_ratio": _ratio_text(ratio)}


def _from_width_height(
    width: int | None, height: int | None, spec: ModelSpec, kind: Kind
) -> dict[str, Any]:
    """Width and height as given; above 4 MP scaled down keeping the ratio, as BFL does.

    0 for both means "the upstream decides" and is never sent (BFL's schema refuses 0).
    """
    if width is None or height is None:
        missing = "height" if height is None else "width"
        raise InvalidRequest("Give width and height together.", param=missing)
    if width == 0 and height == 0:
        return {}
    if spec.limits(kind).size_control != "width_height":
        return {"aspect_ratio": _ratio_text(_ratio(width, height, "width", spec, kind))}
    for name, side in (("width", width), ("height", height)):
        if side < MIN_SIDE or side % SIDE_STEP:
            raise InvalidRequest(
                f"'{name}' must be at least {MIN_SIDE} and a multiple of {SIDE_STEP}.", param=name
            )
    if width * height > MAX_PIXELS:
        return _fit_pixels(width, height)
    return {"width": width, "height": height}


def _parse_size(size: str) -> tuple[int, int]:
    match = _SIZE.match(size)
    if match is None or 0 in (int(match.group(1)), int(match.group(2))):
        raise InvalidRequest("'size' must be 'auto' or WIDTHxHEIGHT, like 1536x1024.", param="size")
    return int(match.group(1)), int(match.group(2))


def _parse_ratio(text: str, spec: ModelSpec, kind: Kind) -> Fraction:
    match = _RATIO.match(text)
    if match is None or 0 in (int(match.group(1)), int(match.group(2))):
        raise InvalidRequest("'aspect_ratio' must look like 16:9.", param="aspect_ratio")
    return _ratio(int(match.group(1)), int(match.group(2)), "aspect_ratio", spec, kind)


def _ratio(width: int, height: int, param: str, spec: ModelSpec, kind: Kind) -> Fraction:
    taken = spec.limits(kind).ratio_range
    if 0 in (width, height):
        raise InvalidRequest(f"'{param}' needs both sides above 0.", param=param)
    if taken is None:
        return Fraction(width, height)
    low, high = taken
    if not low <= Fraction(width, height) <= high:
        raise InvalidRequest(
            f"{spec.id} takes aspect ratios from {_ratio_text(low)} to {_ratio_text(high)}.",
            param=param,
        )
    return Fraction(width, height)


def _ratio_text(ratio: Fraction) -> str:
    return f"{ratio.numerator}:{ratio.denominator}"


def _fit_pixels(width: int, height: int) -> dict[str, int]:
    """Keep the ratio in multiples of 16, at least 64 a side and at most 4 megapixels."""
    scale = min(1.0, math.sqrt(MAX_PIXELS / (width * height)))
    scale = max(scale, MIN_SIDE / min(width, height))
    sides = [round(side * scale / SIDE_STEP) * SIDE_STEP for side in (width, height)]
    if sides[0] * sides[1] > MAX_PIXELS:
        sides = [math.floor(side * scale / SIDE_STEP) * SIDE_STEP for side in (width, height)]
    return {"width": max(MIN_SIDE, sides[0]), "height": max(MIN_SIDE, sides[1])}
