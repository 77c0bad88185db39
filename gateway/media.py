"""Image type sniffing from magic bytes: the one place that decides what an image is."""

from __future__ import annotations

import base64
import binascii
import re

SNIFF_BYTES = 12
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_DATA_URL = re.compile(r"^data:(image/(?:png|jpeg|webp));base64,", re.ASCII)


def sniff(head: bytes) -> str | None:
    """The content type of an image from its first bytes, or None if it is not PNG/JPEG/WebP."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def to_data_url(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def parse_data_url(url: str) -> tuple[str, bytes] | None:
    """(declared type, decoded bytes) of an image data URL, or None if it is not one."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    try:
        data = base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError):
        return None
    return match.group(1), data
