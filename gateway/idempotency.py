"""`Idempotency-Key`: the same key and body from the same team within 24 h is answered once.

The first request claims the key; a concurrent duplicate waits for its answer; a retry after
it finished gets the stored answer (same links) with no second upstream job. A different body
under the same key is a 409. A request that fails gives its claim up, so a retry can run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import orjson

from gateway.errors import ApiError, Conflict, InvalidRequest, ServiceUnavailable
from gateway.requests import ParsedRequest
from gateway.state.base import State, StateUnavailable

log = logging.getLogger("gateway.idempotency")

MAX_KEY_LENGTH = 255
FIRST_POLL_S = 0.05
MAX_POLL_S = 0.5


def body_hash(parsed: ParsedRequest) -> str:
    """A hash of what the request means, not of its bytes (multipart boundaries differ)."""
    canonical = {
        "body": parsed.body.model_dump(mode="json", exclude_none=True, exclude={"image", "images"}),
        "references": [ref.value for ref in parsed.references],
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Idempotency:
    def __init__(self, state: State, wait_s: float) -> None:
        self.state = state
        self.wait_s = wait_s

    @staticmethod
    def name(team: str, key: str) -> str:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidRequest(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
                param="Idempotency-Key",
            )
        return f"{team}:{hashlib.sha256(key.encode()).hexdigest()}"

    async def begin(self, name: str, digest: str) -> bytes | None:
        """None: this request owns the key and must `finish` or `drop` it. Else: the answer."""
        deadline = time.monotonic() + self.wait_s
        delay = FIRST_POLL_S
        while True:
            record = await self.state.idem_begin(name, digest)
            if record is None:
                return None
            if record.body_hash != digest:
                raise Conflict(
                    "This Idempotency-Key was used with a different request body.",
                    param="Idempotency-Key",
                )
            if record.state == "done":
                return record.response
            if time.monotonic() + delay > deadline:
                raise ServiceUnavailable(
                    "A request with this Idempotency-Key is still running; retry later.",
                    code="idempotency_pending",
                    headers={"retry-after": "5"},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL_S)

    async def finish(self, name: str, response: bytes) -> None:
        """Store the answer; if the state is down the answer still goes out (and is logged)."""
        try:
            await self.state.idem_finish(name, response)
        except (StateUnavailable, ApiError) as exc:
            log.warning("idempotent answer not stored", extra={"error": str(exc)})

    async def drop(self, name: str) -> None:
        """Give the key up; if the state is down the pending claim expires by itself."""
        try:
            await self.state.idem_drop(name)
        except (StateUnavailable, ApiError) as exc:
            log.warning("idempotency claim not dropped", extra={"error": str(exc)})
