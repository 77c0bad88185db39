"""Pending deliveries under ids the caller gives (a webhook's `webhook-id`).

Each holds an opaque payload, the number of attempts started and when the next is due. A claim
takes due items atomically and moves them `lease_s` later, so a worker that dies mid-attempt
leaves its items to whoever claims next once the lease has passed: at least once, never two
workers at the same time within a lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Claimed:
    """A due item, now leased to the claimer; `attempt` counts this one (1 for the first)."""

    id: str
    payload: bytes
    attempt: int


class Deliveries(Protocol):
    async def delivery_add(self, delivery_id: str, payload: bytes) -> bool:
        """Keep an item, due now; False (and nothing changed) if the id is already kept."""
        ...

    async def delivery_claim(self, owner: str, limit: int, lease_s: float) -> list[Claimed]:
        """Up to `limit` due items, earliest first, each leased to `owner` for `lease_s`."""
        ...

    async def delivery_later(self, delivery_id: str, owner: str, delay_s: float) -> None:
        """Make an item `owner` still holds due again in `delay_s`; otherwise change nothing."""
        ...

    async def delivery_remove(self, delivery_id: str) -> None:
        """Forget an item (delivered, or given up)."""
        ...
