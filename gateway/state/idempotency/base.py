"""Idempotency records under names the caller gives (a team's key for one request)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

PENDING_TTL_S = 900.0
DONE_TTL_S = 24 * 3600.0


@dataclass(frozen=True)
class IdemRecord:
    """`state` pending | done; `response` is empty until done."""

    state: str
    body_hash: str
    response: bytes


class IdempotencyRecords(Protocol):
    async def idem_begin(self, name: str, body_hash: str) -> IdemRecord | None:
        """Claim `name` (None: claimed now) or return the record someone else holds."""
        ...

    async def idem_finish(self, name: str, response: bytes) -> None:
        """Keep the answer of a claimed name for DONE_TTL_S."""
        ...

    async def idem_drop(self, name: str) -> None:
        """Give the claim up, so the next request with the name runs again."""
        ...
