"""Idempotency records in this process, swept when many have expired."""

from __future__ import annotations

import time

from gateway.state.idempotency.base import DONE_TTL_S, PENDING_TTL_S, IdemRecord

SWEEP_AT = 10_000


class MemoryIdempotency:
    def __init__(self) -> None:
        self._records: dict[str, tuple[IdemRecord, float]] = {}

    async def idem_begin(self, name: str, body_hash: str) -> IdemRecord | None:
        now = time.time()
        if len(self._records) > SWEEP_AT:
            self._records = {k: v for k, v in self._records.items() if v[1] > now}
        held = self._records.get(name)
        if held is not None and held[1] > now:
            return held[0]
        self._records[name] = (IdemRecord("pending", body_hash, b""), now + PENDING_TTL_S)
        return None

    async def idem_finish(self, name: str, response: bytes) -> None:
        held = self._records.get(name)
        if held is not None:
            done = IdemRecord("done", held[0].body_hash, response)
            self._records[name] = (done, time.time() + DONE_TTL_S)

    async def idem_drop(self, name: str) -> None:
        self._records.pop(name, None)
