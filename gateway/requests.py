"""JSON and multipart bodies → one validated `ImageRequest`, with its reference images in order.

Everything here is independent of the model and upstream: shape, types, ranges every model
shares, and the mapping of OpenAI's `image` / `image[]` / `images` / files onto the ordered
reference list that becomes `input_image`, `input_image_2` … upstream.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, BinaryIO, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from gateway import bigjson, media, offload
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


FileSource = bytes | BinaryIO
"""An uploaded reference: its bytes, or the spooled file to read them from."""


def validate(
    data: dict[str, Any],
    files: Sequence[tuple[str, FileSource]] | None = None,
    own_prefix: str = "",
    known_base64: Sequence[str] = (),
) -> ParsedRequest:
    """Validate a body (already decoded) and collect its reference images in order.

    Checking data URLs reads them whole: with big ones, call it through `offload.run`.
    `known_base64`: strings of `data` that `bigjson.loads` found all base64 (after a data
    URL's header, up to the closing '='), whose alphabet need not be checked again."""
    if "mask" in data:
        raise InvalidRequest(_UNSUPPORTED["mask"], param="mask", code="unsupported_parameter")
    try:
        body = ImageRequest.model_validate(data)
    except ValidationError as exc:
        raise _error_from(exc) from None
    body.check_neutral()
    checked = {id(text) for text in known_base64}  # the very strings, alive in `data`
    return ParsedRequest(body, tuple(_references(body, files or [], own_prefix, checked)))


def _references(
    body: ImageRequest,
    files: Sequence[tuple[str, FileSource]],
    own_prefix: str,
    checked: set[int],
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
    given = len(openai_style)
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
    # Data URLs made here from files are right by construction; the others are checked.
    for index, ref in enumerate(refs if native else refs[:given]):
        if index:
            offload.breathe()
        check_reference(ref, own_prefix, alphabet_checked=id(ref.value) in checked)
    return refs


def _file_data_url(param: str, source: FileSource) -> str:
    limit = MAX_REFERENCE_MB * 1024 * 1024
    data = source if isinstance(source, bytes) else source.read(limit + 1)
    content_type = media.sniff(data[: media.SNIFF_BYTES])
    if content_type is None:
        raise InvalidRequest(f"'{param}' is not a PNG, JPEG or WebP image.", param=param)
    if len(data) > limit:
        raise InvalidRequest(f"'{param}' is larger than {MAX_REFERENCE_MB} MB.", param=param)
    return media.to_data_url(data, content_type)


def check_reference(ref: Reference, own_prefix: str, *, alphabet_checked: bool = False) -> None:
    """A reference must be an https URL, an image data URL, or (checked later) a gateway link."""
    value = ref.value
    if own_prefix and value.startswith(own_prefix):
        return
    if value.startswith("data:"):
        if len(value) > MAX_REFERENCE_MB * 1024 * 1024 * 4 // 3 + 64:
            raise InvalidRequest(
                f"'{ref.param}' is larger than {MAX_REFERENCE_MB} MB.", param=ref.param
            )
        checked = media.check_data_url(value, alphabet_checked=alphabet_checked)
        if checked is None:
            raise InvalidRequest(
                f"'{ref.param}' is not a valid data:image/(png|jpeg|webp);base64 URL.",
                param=ref.param,
            )
        declared, actual = checked
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


async def read_body(request: Request) -> bytearray:
    """The body, gathered as it arrives.

    Not `Request.body()`: that joins the chunks in one more whole copy (one long call for a
    big body) and keeps it on the request, beside the parsed body, until the request ends."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    return body


def decode_json(holder: list[bytearray]) -> tuple[object, list[str]]:
    """The JSON of the body in `holder`, which is emptied (the bytes go once they are parsed),
    and its big base64 strings (`bigjson.loads`)."""
    raw = holder.pop()
    try:
        return bigjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not valid JSON.", code="invalid_json") from None


def _validate_json(holder: list[bytearray], own_prefix: str) -> ParsedRequest:
    data, known_base64 = decode_json(holder)
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_json")
    return validate(data, None, own_prefix, known_base64)


async def parse(request: Request, max_body_bytes: int, own_prefix: str) -> ParsedRequest:
    """Decode a JSON or multipart body, coercing form strings, and validate it.

    `own_prefix` is the start of this gateway's durable links, accepted as references. The
    decoding and checking of a big body run in one worker-thread call (`offload.run`).
    """
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(
            max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=max_body_bytes
        )
        try:
            data, files = _form_fields(form)
            size = bigjson.text_size(data) + sum(upload.size or 0 for upload in _uploads(form))
            return await offload.run(size, validate, data, files, own_prefix)
        finally:
            await form.close()
    holder = [await read_body(request)]
    return await offload.run(len(holder[0]), _validate_json, holder, own_prefix)


_LIST_FIELD = re.compile(r"^(?P<name>[a-z_0-9]+)\[\d*\]$")


def _uploads(form: FormData) -> list[UploadFile]:
    return [value for _, value in form.multi_items() if isinstance(value, UploadFile)]


def _form_fields(form: FormData) -> tuple[dict[str, Any], list[tuple[str, FileSource]]]:
    """The form's fields as a body, and its `image` files in order (read later, in `validate`)."""
    data: dict[str, Any] = {}
    files: list[tuple[str, FileSource]] = []
    counts: dict[str, int] = {}
    for key, value in form.multi_items():
        match = _LIST_FIELD.match(key)
        name = match.group("name") if match else key
        if isinstance(value, UploadFile):
            if name != "image":
                raise _unexpected_file(name)
            index = counts.get(name, 0)
            counts[name] = index + 1
            files.append((f"image[{index}]", value.file))
        elif match or (name in ("image", "images") and name in data):
            data.setdefault(name, [])
            if not isinstance(data[name], list):
                data[name] = [data[name]]
            data[name].append(value)
        elif name in data:
            raise InvalidRequest(f"'{name}' is given more than once.", param=name)
        else:
            data[name] = value
    if "image" in data and files:
        raise InvalidRequest("Give 'image' either as files or as URLs, not both.", param="image")
    return data, files


def _unexpected_file(name: str) -> InvalidRequest:
    if name == "mask":
        return InvalidRequest(_UNSUPPORTED["mask"], param="mask", code="unsupported_parameter")
    return InvalidRequest(
        f"Unexpected file part '{name}': only 'image' files are accepted.", param=name
    )
