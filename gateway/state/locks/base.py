"""Lease-locks under given names: held until released or until the lease runs out."""

from __future__ import annotations

from typing import Protocol


class Locks(Protocol):
    async def lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or extend a lease-lock; True if `owner` holds it now."""
        ...

    async def unlock(self, name: str, owner: str) -> None:
        """Release the lock if `owner` holds it; another owner's lock stays."""
        ...
