"""`Idempotency-Key`: the same key and body from the same team within 24 h is answered once.

The first request claims the key; a concurrent duplicate waits for its answer; a retry after
it finished gets the stored answer (same links) with no second upstream job. A different body
under the same key is a 409. A request that fails gives its claim up, so a retry can run.

A record keeps the answer without its inline images: a `b64_json` entry is stored as the id of
its cached image and read back from the cache on replay, so a record is a few hundred bytes
whatever `n` and the image sizes (the shipped Redis never evicts), and the replay is the same
bytes as the first answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import bigjson, offload
from gateway.cache import ResultCache, StoredImage
from gateway.errors import (
    Conflict,
    GatewayError,
    InvalidRequest,
    ServiceUnavailable,
)
from gateway.media import b64encode
from gateway.requests import ParsedRequest
from gateway.state.idempotency.base import IdempotencyRecords

log = logging.getLogger("gateway.idempotency")

MAX_KEY_LENGTH = 255
FIRST_POLL_S = 0.05
MAX_POLL_S = 0.5


async def body_hash(parsed: ParsedRequest) -> str:
    """A hash of what the request means, not of its bytes (multipart boundaries differ).

    With references as data URLs that is tens of megabytes to encode and hash: a worker
    thread does it, in pieces."""
    size = sum(len(ref.value) for ref in parsed.references)
    return await offload.run(size, _digest, parsed)


def _digest(parsed: ParsedRequest) -> str:
    canonical = {
        "body": parsed.body.model_dump(mode="json", exclude_none=True, exclude={"image", "images"}),
        "references": [ref.value for ref in parsed.references],
    }
    digest = hashlib.sha256()
    for piece in bigjson.pieces(canonical, sort_keys=True):
        digest.update(piece)
    return digest.hexdigest()


@dataclass(frozen=True)
class Replay:
    """The first answer to a key, to be sent again."""

    body: dict[str, Any]
    headers: dict[str, str]


class Idempotency:
    def __init__(self, records: IdempotencyRecords, cache: ResultCache, wait_s: float) -> None:
        self.records = records
        self.cache = cache
        self.wait_s = wait_s

    @staticmethod
    def name(team: str, key: str) -> str:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidRequest(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
                param="Idempotency-Key",
            )
        return f"{team}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def begin(self, name: str, digest: str) -> Replay | None:
        """None: this request owns the key and must `finish` or `drop` it. Else: the answer."""
        deadline = time.monotonic() + self.wait_s
        delay = FIRST_POLL_S
        while True:
            record = await self.records.idem_begin(name, digest)
            if record is None:
                return None
            if record.body_hash != digest:
                raise Conflict(
                    "This Idempotency-Key was used with a different request body.",
                    param="Idempotency-Key",
                )
            if record.state == "done":
                replay = await self._replay(record.response)
                if replay is not None:
                    return replay
                log.warning("idempotent answer's image is gone; running the request again")
                await self.records.idem_drop(name)
                continue
            if time.monotonic() + delay > deadline:
                raise ServiceUnavailable(
                    "A request with this Idempotency-Key is still running; retry later.",
                    code="idempotency_pending",
                    headers={"retry-after": "5"},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL_S)

    async def _replay(self, stored: bytes) -> Replay | None:
        """The stored answer with its inline images read back; None if one is gone."""
        record = orjson.loads(stored)
        body: dict[str, Any] = record["body"]
        for index, image_id in record.get("inline", {}).items():
            image = await self.cache.get(image_id)
            if image is None:
                return None
            data = await self.cache.read(image)
            body["data"][int(index)]["b64_json"] = await offload.run(len(data), b64encode, data)
        return Replay(body, record["headers"])

    async def finish(
        self, name: str, body: dict[str, Any], headers: dict[str, str], images: list[StoredImage]
    ) -> None:
        """Store the answer (`images`: behind each `body["data"]` entry, in order) with links
        to its inline images; if the state is down the answer still goes out (and is logged)."""
        data = [dict(entry) for entry in body["data"]]
        inline: dict[str, str] = {}
        for index, (entry, image) in enumerate(zip(data, images, strict=True)):
            if "b64_json" in entry:
                entry["b64_json"] = None
                inline[str(index)] = image.id
        record = {"body": {**body, "data": data}, "headers": headers, "inline": inline}
        try:
            await self.records.idem_finish(name, orjson.dumps(record))
        except GatewayError as exc:
            log.warning("idempotent answer not stored", extra={"error": str(exc)})

    async def drop(self, name: str) -> None:
        """Give the key up; if the state is down the pending claim expires by itself."""
        try:
            await self.records.idem_drop(name)
        except GatewayError as exc:
            log.warning("idempotency claim not dropped", extra={"error": str(exc)})
