"""Reference images as both protocols receive them: URLs (never fetched) or image bytes."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from gateway.media import parse_data_url, sniff

MAX_REFERENCES = 8


def image_fields(count: int = MAX_REFERENCES) -> list[str]:
    """`input_image`, `input_image_2` … in order: the protocols' reference image keys."""
    return ["input_image", *(f"input_image_{i}" for i in range(2, count + 1))]


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference image: a URL to leave alone, or decoded bytes of a sniffed type."""

    url: str | None = None
    data: bytes | None = None
    content_type: str | None = None

    @property
    def token(self) -> bytes:
        """What the rendering mixes in: the bytes' hash, or the URL itself."""
        if self.data is not None:
            return hashlib.sha256(self.data).digest()
        return (self.url or "").encode()


def parse_reference(value: object, *, raw_base64: bool = False) -> Reference:
    """Check a reference value; raises ValueError with a message for the client.

    The aggregator takes https URLs and image data URLs whose bytes match the declared type;
    BFL also takes http URLs and bare base64.
    """
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    if value.startswith("https://") or (raw_base64 and value.startswith("http://")):
        return Reference(url=value)
    if value.startswith("data:"):
        parsed = parse_data_url(value)
        if parsed is None:
            raise ValueError("must be a data:image/(png|jpeg|webp);base64, URL")
        declared, data = parsed
        if sniff(data[:12]) != declared:
            raise ValueError(f"data URL bytes are not {declared}")
        return Reference(data=data, content_type=declared)
    if raw_base64:
        return _bare_base64(value)
    raise ValueError("must be an https URL or an image data URL")


def _bare_base64(value: str) -> Reference:
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("must be a URL or base64-encoded image") from error
    content_type = sniff(data[:12])
    if content_type is None:
        raise ValueError("base64 data is not a PNG, JPEG or WebP image")
    return Reference(data=data, content_type=content_type)


def collect(body: dict[str, object], *, raw_base64: bool = False) -> list[Reference]:
    """The references of an already validated body, in key order."""
    return [
        parse_reference(body[name], raw_base64=raw_base64)
        for name in image_fields()
        if body.get(name) is not None
    ]
