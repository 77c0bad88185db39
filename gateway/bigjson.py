"""JSON of bodies that carry big strings (reference images as base64), read and written in slices.

One `orjson.loads` of a 20 MB edit body is one C call of some 30 ms, and so is every copy of
it (fresh memory faults in at about 2 GB/s here): even in a worker thread each holds the GIL,
and so the event loop, all along. The big strings of such bodies are base64 or data URLs, which
JSON carries as they are (no escapes), so `loads` lifts each of them out of the text (its
alphabet checked, then one ASCII decode), parses the small rest with orjson and puts them back
in place; it names them, so that their alphabet need not be checked a second time. `pieces`
is the other way round: the bytes `orjson.dumps` writes, in pieces, each big string encoded
slice by slice. Both `offload.breathe` between slices, for `offload.run`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import orjson

from gateway import offload
from gateway.media import BASE64, MAX_PADDING

BIG = 16 * 1024
"""Strings from this many characters are lifted out and encoded apart."""
PIECE = 64 * 1024
"""Bytes handled at a time: tens of microseconds, and below the size from which the allocator
maps fresh memory (which faults in page by page)."""
MAX_STRINGS = 4096
"""Past this many strings (or odd escapes) the body is not the kind lifting helps: plain orjson."""
MAX_BACKSLASHES = 64
"""A string that ends in more backslashes than this is left, with the whole text, to orjson."""
_DATA_URL = re.compile(rb"data:[\w.+-]{1,64}/[\w.+-]{1,64};base64,", re.ASCII)


def loads(raw: bytes | bytearray) -> tuple[Any, list[str]]:
    """`orjson.loads(raw)` (the same value and errors) without one long call on big strings;
    and the big strings lifted out of it: base64, with or without a data URL's header, all of
    the base64 alphabet up to a run of at most `MAX_PADDING` '='."""
    lifted = _lift(raw)
    if lifted is None:
        return orjson.loads(raw), []
    skeleton, strings, marker = lifted
    return _restore(orjson.loads(skeleton), strings, marker), strings


def _lift(raw: bytes | bytearray) -> tuple[bytes, list[str], str] | None:
    """The text with each big base64 string replaced by a marker, and those strings in order;
    None when nothing is worth lifting or the text is not of the kind that can be lifted."""
    if len(raw) < BIG:
        return None
    view = memoryview(raw)
    marker = secrets.token_hex(16)
    parts: list[bytes | memoryview] = []
    strings: list[str] = []
    copied = scanned = 0
    for _ in range(MAX_STRINGS):
        start = raw.find(b'"', scanned)
        if start < 0:
            break
        end = _string_end(raw, start + 1)
        if end < 0:
            return None  # not JSON: orjson says where
        if end - start > BIG and _base64(raw, start + 1, end):
            parts += [view[copied:start], f'"{marker}:{len(strings)}"'.encode()]
            strings.append(str(view[start + 1 : end], "ascii"))
            copied = end + 1
            offload.breathe()
        scanned = end + 1
    else:
        return None
    if not strings:
        return None
    parts.append(view[copied:])
    return b"".join(parts), strings, marker


def _string_end(raw: bytes | bytearray, at: int) -> int:
    """Where the JSON string whose text starts at `at` ends (its closing quote), or -1."""
    while True:
        end = raw.find(b'"', at)
        if end < 0:
            return -1
        slashes = 0
        while raw[end - 1 - slashes] == 0x5C:  # backslash
            slashes += 1
            if slashes > MAX_BACKSLASHES:
                return -1
        if slashes % 2 == 0:
            return end
        at = end + 1


def _base64(raw: bytes | bytearray, start: int, end: int) -> bool:
    """Whether `raw[start:end]` is base64 as `loads` lifts it: JSON carries it as it is."""
    header = _DATA_URL.match(raw, start, end)
    at = header.end() if header else start
    padding = 0
    while end > at and raw[end - 1] == 0x3D:  # '='
        end, padding = end - 1, padding + 1
        if padding > MAX_PADDING:
            return False
    for piece in range(at, end, PIECE):
        if piece != at:
            offload.breathe()
        if raw[piece : min(piece + PIECE, end)].translate(None, BASE64):
            return False
    return True


def _restore(value: Any, strings: list[str], marker: str) -> Any:
    """`value` with every marker string, key or value, at any depth, back to its string."""
    prefix = f"{marker}:"

    def back(item: Any) -> Any:
        if isinstance(item, str) and item.startswith(prefix):
            return strings[int(item[len(prefix) :])]
        return item

    todo = [value]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if any(key.startswith(prefix) for key in node):
                items = list(node.items())
                node.clear()
                node.update((back(key), item) for key, item in items)
            for key, item in node.items():
                node[key] = back(item)
                if isinstance(item, dict | list):
                    todo.append(item)
        elif isinstance(node, list):
            for index, item in enumerate(node):
                node[index] = back(item)
                if isinstance(item, dict | list):
                    todo.append(item)
    return back(value)


def text_size(value: Any) -> int:
    """The characters of the strings in `value`: about what its JSON weighs."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(key) + text_size(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return sum(text_size(item) for item in value)
    return 0


def pieces(value: Any, sort_keys: bool = False) -> Iterator[bytes]:
    """The bytes `orjson.dumps(value)` writes (with `OPT_SORT_KEYS` if asked), in pieces:
    each big string slice by slice, the rest as orjson writes it."""
    if isinstance(value, str) and len(value) > BIG:
        yield from _string_pieces(value)
    elif isinstance(value, dict) and text_size(value) > BIG:
        items = sorted(value.items()) if sort_keys else value.items()
        for index, (key, item) in enumerate(items):
            yield (b"," if index else b"{") + orjson.dumps(key) + b":"
            yield from pieces(item, sort_keys)
        yield b"}"
    elif isinstance(value, list | tuple) and text_size(value) > BIG:
        for index, item in enumerate(value):
            yield b"," if index else b"["
            yield from pieces(item, sort_keys)
        yield b"]"
    else:
        yield orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)


def _string_pieces(text: str) -> Iterator[bytes]:
    """A JSON string slice by slice: escapes are per character, so slices encode apart."""
    yield b'"'
    for at in range(0, len(text), PIECE):
        offload.breathe()
        yield orjson.dumps(text[at : at + PIECE])[1:-1]
    yield b'"'
