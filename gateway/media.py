"""Image type sniffing from magic bytes, and the base64 of images: the one place for both.

Base64 of big images works in slices with `offload.breathe` between them, so that it can run
in a worker thread without holding the GIL (and the event loop) for milliseconds at a time.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator

from gateway import offload

SNIFF_BYTES = 12
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_DATA_URL = re.compile(r"^data:(image/(?:png|jpeg|webp));base64,", re.ASCII)
SLICE = 64 * 1024
"""Base64 characters handled at a time: a multiple of 4, some tens of microseconds, and below
the size from which the allocator maps fresh memory (which faults in page by page)."""
ENCODE_SLICE = SLICE // 4 * 3
"""Bytes encoded at a time: a multiple of 3, so that the slices' base64 simply joins."""
BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
MAX_PADDING = 8
"""More closing '=' than this (which no encoder writes) are judged by decoding it all."""


def sniff(head: bytes) -> str | None:
    """The content type of an image from its first bytes, or None if it is not PNG/JPEG/WebP."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def b64encode(data: bytes, prefix: str = "") -> str:
    """`prefix` followed by the base64 of `data`."""
    view = memoryview(data)
    parts = [prefix]
    for start in range(0, len(view), ENCODE_SLICE):
        if start:
            offload.breathe()
        parts.append(
            binascii.b2a_base64(view[start : start + ENCODE_SLICE], newline=False).decode()
        )
    return "".join(parts)


def to_data_url(data: bytes, content_type: str) -> str:
    return b64encode(data, f"data:{content_type};base64,")


def _decoded(text: str, start: int, stop: int) -> Iterator[bytes]:
    """Strict base64 of `text[start:stop]`, slice by slice, exactly as one
    `base64.b64decode(…, validate=True)` takes it (padding only at the very end).
    Raises ValueError (binascii.Error is one) where that refuses it."""
    at = start
    while at < stop:
        if at != start:
            offload.breathe()
        cut = at + SLICE
        if cut >= stop or text[cut] == "=":
            cut = stop  # padding is judged with the quad before it
        piece = text[at:cut]
        if cut < stop and piece.endswith("="):
            raise binascii.Error("padding before the end")
        yield binascii.a2b_base64(piece, strict_mode=True)
        at = cut


def _is_base64(text: str, start: int, alphabet_checked: bool = False) -> bool:
    """Whether `_decoded` takes `text[start:]`, without decoding it all: the alphabet alone up
    to the closing '=' run (a check some 6x faster than decoding; skipped when the caller has
    made it), then only the last quads decoded with that run. Decoding goes quad by quad, so a
    run of whole quads of the alphabet before them cannot change the verdict."""
    end = len(text)
    while end > start and text[end - 1] == "=":
        end -= 1
        if len(text) - end > MAX_PADDING:
            return _decodes(text, start)
    if not alphabet_checked and not _of_alphabet(text, start, end):
        return False
    try:
        binascii.a2b_base64(text[max(start, end - 4 - (end - start) % 4) :], strict_mode=True)
    except ValueError:
        return False
    return True


def _of_alphabet(text: str, start: int, end: int) -> bool:
    for at in range(start, end, SLICE):
        if at != start:
            offload.breathe()
        try:
            piece = text[at : min(at + SLICE, end)].encode("ascii")
        except UnicodeEncodeError:
            return False
        if piece.translate(None, BASE64):
            return False
    return True


def _decodes(text: str, start: int) -> bool:
    try:
        for _ in _decoded(text, start, len(text)):
            pass
    except ValueError:
        return False
    return True


def parse_data_url(url: str) -> tuple[str, bytes] | None:
    """(declared type, decoded bytes) of an image data URL, or None if it is not one."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    try:
        data = b"".join(_decoded(url, match.end(), len(url)))
    except ValueError:
        return None
    return match.group(1), data


def check_data_url(url: str, alphabet_checked: bool = False) -> tuple[str, str | None] | None:
    """(declared type, sniffed type of its bytes) of a valid image data URL, else None.

    All of it must be valid base64; only its first bytes are decoded. `alphabet_checked`: the
    caller knows it is all of the base64 alphabet up to its closing '=' run."""
    match = _DATA_URL.match(url)
    if match is None or not _is_base64(url, match.end(), alphabet_checked):
        return None
    head = data_url_head(url, SNIFF_BYTES) or b""
    return match.group(1), sniff(head[:SNIFF_BYTES])


def data_url_head(url: str, size: int) -> bytes | None:
    """The first bytes (at least `size`, or all) of a valid data URL's image, else None."""
    match = _DATA_URL.match(url)
    if match is None:
        return None
    start = match.end()
    stop = min(len(url), start + (size + 2) // 3 * 4)
    try:
        return b"".join(_decoded(url, start, stop))
    except ValueError:
        return None
