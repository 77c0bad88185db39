"""JSON and multipart bodies → one validated `ImageRequest`, with its reference images in order.

Everything here is independent of the model and upstream: shape, types, ranges every model
shares, and the mapping of OpenAI's `image` / `image[]` / `images` / files onto the ordered
reference list that becomes `input_image`, `input_image_2` … upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.requests import Request

from gateway import media
from gateway.catalog import MODELS, REFERENCE_KEYS
from gateway.errors import InvalidRequest, UnknownParameter

MAX_REFERENCE_MB = 20
MAX_FORM_FIELDS = 64
MAX_FORM_FILES = 16


class ImageRef(BaseModel):
    """OpenAI's JSON image reference object (`images: [{"image_url": …}]`)."""

    model_config = ConfigDict(extra="forbid")
    image_url: str


class ImageRequest(BaseModel):
    """The body of `/v1/images/generations` and `/v1/images/edits`; also the OpenAPI schema."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    model: str | None = Field(default=None, min_length=1, examples=list(MODELS))
    prompt: str = Field(min_length=1, max_length=100_000, examples=["a lighthouse at dusk"])
    input_image: str | None = None
    input_image_2: str | None = None
    input_image_3: str | None = None
    input_image_4: str | None = None
    input_image_5: str | None = None
    input_image_6: str | None = None
    input_image_7: str | None = None
    input_image_8: str | None = None
    image: str | list[str] | None = None
    images: list[str | ImageRef] | None = None
    n: Annotated[int, Field(ge=1, le=10)] = 1
    size: str | None = None
    aspect_ratio: str | None = None
    width: Annotated[int, Field(ge=0)] | None = None
    height: Annotated[int, Field(ge=0)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    safety_tolerance: Annotated[int, Field(ge=0, le=6)] | None = None
    output_format: Literal["jpeg", "png", "webp"] | None = None
    prompt_upsampling: bool | None = None
    steps: int | None = None
    guidance: float | None = None
    response_format: Literal["url", "b64_json"] | None = None
    user: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=256)
    quality: Literal["auto", "standard", "hd", "low", "medium", "high"] | None = None
    style: Literal["vivid", "natural"] | None = None
    background: Literal["auto", "opaque", "transparent"] | None = None
    moderation: Literal["auto", "low"] | None = None
    output_compression: Annotated[int, Field(ge=0, le=100)] | None = None
    partial_images: Annotated[int, Field(ge=0, le=3)] | None = None
    stream: bool | None = None
    input_fidelity: Literal["low", "high"] | None = None
    webhook_url: str | None = Field(default=None, max_length=2048)
    """Where an async job's end is POSTed (SPEC 4.6); never sent upstream."""

    def check_neutral(self) -> None:
        """OpenAI-only fields are accepted unless they ask for what FLUX cannot do."""
        if self.stream:
            raise InvalidRequest(
                _UNSUPPORTED["stream"], param="stream", code="unsupported_parameter"
            )
        if self.background == "transparent":
            raise InvalidRequest(
                _UNSUPPORTED["background"], param="background", code="unsupported_parameter"
            )
        if self.partial_images not in (None, 0):
            raise InvalidRequest(
                "partial_images needs streaming, which FLUX does not support; omit it or use 0.",
                param="partial_images",
                code="unsupported_parameter",
            )

    def ignored(self) -> list[str]:
        """The OpenAI fields given that have no FLUX meaning (the `x-gateway-ignored` header)."""
        named = [name for name in IGNORED_FIELDS if getattr(self, name) is not None]
        if self.moderation == "auto":
            named.append("moderation")
        return named


IGNORED_FIELDS = (
    "quality",
    "style",
    "background",
    "output_compression",
    "input_fidelity",
    "partial_images",
    "stream",
    "safety_identifier",
)
"""Accepted so apps written for gpt-image or DALL·E run unchanged; never sent upstream."""


@dataclass(frozen=True)
class Reference:
    """One reference image: where the client put it (`param`) and its value (URL or data URL)."""

    param: str
    value: str


@dataclass(frozen=True)
class ParsedRequest:
    body: ImageRequest
    references: tuple[Reference, ...]


_UNSUPPORTED = {
    "mask": "masks are not supported by FLUX; describe the edit in the prompt instead",
    "stream": "streaming is not supported for FLUX images; omit stream or set it to false",
    "background": "FLUX cannot make transparent backgrounds; use 'auto' or 'opaque'",
}


def _error_from(exc: ValidationError) -> InvalidRequest:
    first = exc.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    param = loc[0] if loc else None
    if param in _UNSUPPORTED:
        return InvalidRequest(_UNSUPPORTED[param], param=param, code="unsupported_parameter")
    if first["type"] == "extra_forbidden":
        return UnknownParameter(f"Unknown parameter: '{param}'.", param=param)
    if first["type"] == "missing":
        return InvalidRequest(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    return InvalidRequest(f"Invalid value for '{param}': {first['msg']}.", param=param)


def validate(
    data: dict[str, Any], files: list[tuple[str, bytes]] | None = None, own_prefix: str = ""
) -> ParsedRequest:
    """Validate a body (already decoded) and collect its reference images in order."""
    if "mask" in data:
        raise InvalidRequest(_UNSUPPORTED["mask"], param="mask", code="unsupported_parameter")
    try:
        body = ImageRequest.model_validate(data)
    except ValidationError as exc:
        raise _error_from(exc) from None
    body.check_neutral()
    return ParsedRequest(body, tuple(_references(body, files or [], own_prefix)))


def _references(
    body: ImageRequest, files: list[tuple[str, bytes]], own_prefix: str
) -> list[Reference]:
    native = [Reference(k, v) for k in REFERENCE_KEYS if (v := getattr(body, k)) is not None]
    openai_style: list[Reference] = []
    if body.image is not None and body.images is not None:
        raise InvalidRequest(
            "Give reference images as 'image' or 'images', not both.", param="images"
        )
    if isinstance(body.image, str):
        openai_style.append(Reference("image", body.image))
    elif body.image is not None:
        openai_style += [Reference(f"image[{i}]", v) for i, v in enumerate(body.image)]
    for i, item in enumerate(body.images or []):
        value = item.image_url if isinstance(item, ImageRef) else item
        openai_style.append(Reference(f"images[{i}]", value))
    openai_style += [Reference(param, _file_data_url(param, data)) for param, data in files]
    if native and openai_style:
        raise InvalidRequest(
            "Give reference images either as input_image… keys or as image/images/files, "
            "not both: their order would be ambiguous.",
            param=openai_style[0].param.split("[")[0],
            code="ambiguous_reference_images",
        )
    refs = native or openai_style
    if len(refs) > len(REFERENCE_KEYS):
        raise InvalidRequest(
            f"At most {len(REFERENCE_KEYS)} reference images are supported.",
            param=REFERENCE_KEYS[-1],
        )
    for ref in refs:
        check_reference(ref, own_prefix)
    return refs


def _file_data_url(param: str, data: bytes) -> str:
    content_type = media.sniff(data[: media.SNIFF_BYTES])
    if content_type is None:
        raise InvalidRequest(f"'{param}' is not a PNG, JPEG or WebP image.", param=param)
    if len(data) > MAX_REFERENCE_MB * 1024 * 1024:
        raise InvalidRequest(f"'{param}' is larger than {MAX_REFERENCE_MB} MB.", param=param)
    return media.to_data_url(data, content_type)


def check_reference(ref: Reference, own_prefix: str) -> None:
    """A reference must be an https URL, an image data URL, or (checked later) a gateway link."""
    value = ref.value
    if own_prefix and value.startswith(own_prefix):
        return
    if value.startswith("data:"):
        if len(value) > MAX_REFERENCE_MB * 1024 * 1024 * 4 // 3 + 64:
            raise InvalidRequest(
                f"'{ref.param}' is larger than {MAX_REFERENCE_MB} MB.", param=ref.param
            )
        parsed = media.parse_data_url(value)
        if parsed is None:
            raise InvalidRequest(
                f"'{ref.param}' is not a valid data:image/(png|jpeg|webp);base64 URL.",
                param=ref.param,
            )
        declared, data = parsed
        actual = media.sniff(data[: media.SNIFF_BYTES])
        if actual != declared:
            raise InvalidRequest(
                f"'{ref.param}' declares {declared} but its bytes are "
                f"{actual or 'not a PNG, JPEG or WebP image'}.",
                param=ref.param,
            )
        return
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidRequest(
            f"'{ref.param}' must be an https URL, a data:image/…;base64 URL or a link of this "
            "gateway.",
            param=ref.param,
        )


async def parse(request: Request, max_body_bytes: int, own_prefix: str) -> ParsedRequest:
    """Decode a JSON or multipart body, coercing form strings, and validate it.

    `own_prefix` is the start of this gateway's durable links, accepted as references.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        data, files = await _read_form(request, max_body_bytes)
        return validate(data, files, own_prefix)
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_json")
    return validate(data, None, own_prefix)


_LIST_FIELD = re.compile(r"^(?P<name>[a-z_0-9]+)\[\d*\]$")


async def _read_form(
    request: Request, max_body_bytes: int
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    form = await request.form(
        max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=max_body_bytes
    )
    data: dict[str, Any] = {}
    files: list[tuple[str, bytes]] = []
    counts: dict[str, int] = {}
    try:
        for key, value in form.multi_items():
            match = _LIST_FIELD.match(key)
            name = match.group("name") if match else key
            if isinstance(value, UploadFile):
                if name != "image":
                    raise _unexpected_file(name)
                index = counts.get(name, 0)
                counts[name] = index + 1
                files.append((f"image[{index}]", await value.read()))
            elif match or (name in ("image", "images") and name in data):
                data.setdefault(name, [])
                if not isinstance(data[name], list):
                    data[name] = [data[name]]
                data[name].append(value)
            elif name in data:
                raise InvalidRequest(f"'{name}' is given more than once.", param=name)
            else:
                data[name] = value
    finally:
        await form.close()
    if "image" in data and files:
        raise InvalidRequest("Give 'image' either as files or as URLs, not both.", param="image")
    return data, files


def _unexpected_file(name: str) -> InvalidRequest:
    if name == "mask":
        return InvalidRequest(_UNSUPPORTED["mask"], param="mask", code="unsupported_parameter")
    return InvalidRequest(
        f"Unexpected file part '{name}': only 'image' files are accepted.", param=name
    )
