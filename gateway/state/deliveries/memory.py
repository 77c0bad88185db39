"""Pending deliveries in this process (lost with it)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.state.deliveries.base import Claimed


@dataclass
class _Item:
    payload: bytes
    due: float
    attempts: int = 0
    owner: str = ""


class MemoryDeliveries:
    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}

    async def delivery_add(self, delivery_id: str, payload: bytes) -> bool:
        if delivery_id in self._items:
            return False
        self._items[delivery_id] = _Item(payload, time.monotonic())
        return True

    async def delivery_claim(self, owner: str, limit: int, lease_s: float) -> list[Claimed]:
        now = time.monotonic()
        due = sorted((item.due, key) for key, item in self._items.items() if item.due <= now)
        claimed = []
        for _, key in due[: max(limit, 0)]:
            item = self._items[key]
            item.attempts += 1
            item.owner = owner
            item.due = now + lease_s
            claimed.append(Claimed(key, item.payload, item.attempts))
        return claimed

    async def delivery_later(self, delivery_id: str, owner: str, delay_s: float) -> None:
        item = self._items.get(delivery_id)
        if item is not None and item.owner == owner:
            item.due = time.monotonic() + delay_s

    async def delivery_remove(self, delivery_id: str) -> None:
        self._items.pop(delivery_id, None)
