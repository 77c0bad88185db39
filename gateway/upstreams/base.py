"""The interface every upstream kind implements: one job in, one result link out.

`generate` raises `UpstreamRejected` when the job was not accepted (nothing charged, another
key or upstream may take it), `ContentPolicyViolation` for moderation, `InvalidRequest` when
the upstream refuses the body, and `UpstreamError` / `UpstreamTimeout` once the job may have
been charged — those are never retried.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from gateway import bigjson, offload
from gateway.catalog import Kind
from gateway.settings import UpstreamSettings
from gateway.upstreams.redact import Redactor

DEFAULT_MAX_PER_KEY = 24
JSON_CONTENT = {"content-type": "application/json"}
SEND_PIECE = 256 * 1024
"""Bytes per write of a big body on the event loop: fewer writes cost less, and each
must stay a fraction of a millisecond (the kernel copies it while the loop waits)."""


@dataclass(frozen=True)
class UpstreamResult:
    url: str
    seed: int | None = None
    revised_prompt: str | None = None
    cost_micros: int | None = None
    """What the upstream says the job cost, when it says (BFL's `cost`); it wins over prices."""


class Upstream(ABC):
    kind: Kind

    def __init__(self, settings: UpstreamSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.name = settings.name
        self.client = client
        self.redactor = Redactor(settings.resolved_keys())

    async def post_json(
        self, url: httpx.URL | str, body: dict[str, Any], headers: dict[str, str]
    ) -> httpx.Response:
        """POST `body` as JSON, encoded by orjson rather than httpx's stdlib encoder.

        A big body (references as data URLs) is encoded in a worker thread, in pieces that
        are sent one by one and dropped once sent: neither one long call on the event loop
        nor a second whole copy of the body."""
        size = bigjson.text_size(body)
        if size < offload.THRESHOLD:
            content = orjson.dumps(body)
            return await self.client.post(url, content=content, headers={**headers, **JSON_CONTENT})
        pieces = await offload.run(size, _encoded, body)
        length = {"content-length": str(sum(map(len, pieces)))}
        return await self.client.post(
            url, content=_sent(pieces), headers={**headers, **JSON_CONTENT, **length}
        )

    @property
    def max_per_key(self) -> int:
        return self.settings.max_concurrency_per_key or DEFAULT_MAX_PER_KEY

    @abstractmethod
    async def generate(self, body: dict[str, Any], key: str) -> UpstreamResult:
        """Run one job with `key` and return the upstream's result link."""

    async def check_key(self, key: str) -> bool:
        """Whether a disabled key works again; kinds without a cheap check allow one trial."""
        return True

    async def aclose(self) -> None:
        await self.client.aclose()


def _encoded(body: dict[str, Any]) -> list[bytes]:
    """The JSON of `body` in pieces of about `SEND_PIECE` bytes, one socket write each."""
    encoded: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for piece in bigjson.pieces(body):
        batch.append(piece)
        size += len(piece)
        if size >= SEND_PIECE:
            encoded.append(b"".join(batch))
            batch, size = [], 0
    if batch:
        encoded.append(b"".join(batch))
    return encoded


async def _sent(pieces: list[bytes]) -> AsyncIterator[bytes]:
    """The pieces in order, each let go of as soon as the next one is asked for."""
    pieces.reverse()
    while pieces:
        yield pieces.pop()
