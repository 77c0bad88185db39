"""Job records under ids, listed per owner name, each running job held by one lease.

A lease names its holder and expires unless renewed. Claiming, renewing and ending are each
one atomic step that checks the holder, so two replicas can never both take a job over, and
a replica that lost its lease cannot overwrite the record of the one that took it.
"""

from __future__ import annotations

from typing import Protocol

ACTIVE_TTL_S = 7 * 86400.0
"""A record whose job never ended (every replica gone for good) still expires."""


class JobStore(Protocol):
    async def job_create(
        self, job_id: str, listing: str, score: float, record: bytes, owner: str, lease_s: float
    ) -> None:
        """Store a new record, list it under `listing` by `score`, and lease it to `owner`."""
        ...

    async def job_get(self, job_id: str) -> bytes | None:
        """The record, None once unknown or expired."""
        ...

    async def job_page(
        self, listing: str, before: float | None, limit: int
    ) -> list[tuple[bytes, float]]:
        """Up to `limit` records scored below `before` (None: all), highest score first."""
        ...

    async def job_score(self, listing: str, job_id: str) -> float | None:
        """Where a job sits in its listing (a page cursor), None if it is not there."""
        ...

    async def job_update(self, job_id: str, record: bytes, owner: str) -> bool:
        """Replace a running job's record if `owner` holds its lease; False if it does not."""
        ...

    async def job_end(self, job_id: str, record: bytes, owner: str, ttl_s: float) -> bool:
        """Store the final record (kept `ttl_s`) and drop the lease, if `owner` holds it."""
        ...

    async def job_claim(self, job_id: str, owner: str, lease_s: float) -> bool:
        """Take a running job whose lease expired (or extend one's own); True if now held."""
        ...

    async def job_renew(self, job_ids: list[str], owner: str, lease_s: float) -> list[str]:
        """Extend the leases `owner` still holds; the ids it no longer holds are returned."""
        ...

    async def job_expired(self, limit: int) -> list[str]:
        """Running jobs whose lease has run out (their replica died), oldest expiry first."""
        ...
