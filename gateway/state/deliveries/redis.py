"""Pending deliveries in Redis: a sorted set of due times beside two hashes (payloads, and
`attempts owner` per item); adding, claiming and rescheduling are each one script."""

from __future__ import annotations

from typing import Any, cast

from gateway.state.connection import RedisConnection
from gateway.state.deliveries.base import Claimed


class RedisDeliveries:
    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        # One owner ("pending") for the three, so on a Cluster they share a slot.
        self._keys = [
            conn.key("deliveries", "pending", part) for part in ("due", "payload", "meta")
        ]
        self._add = conn.script("delivery_add")
        self._claim = conn.script("delivery_claim")
        self._later = conn.script("delivery_later")

    async def delivery_add(self, delivery_id: str, payload: bytes) -> bool:
        added = await self.conn.run(self._add, self._keys, [delivery_id, payload])
        return int(added) == 1

    async def delivery_claim(self, owner: str, limit: int, lease_s: float) -> list[Claimed]:
        if limit <= 0:
            return []
        args: list[str | int] = [owner, limit, int(lease_s * 1000)]
        flat = cast(list[Any], await self.conn.run(self._claim, self._keys, args))
        return [
            Claimed(flat[i].decode(), bytes(flat[i + 1]), int(flat[i + 2]))
            for i in range(0, len(flat), 3)
        ]

    async def delivery_later(self, delivery_id: str, owner: str, delay_s: float) -> None:
        args: list[str | int] = [delivery_id, owner, int(delay_s * 1000)]
        await self.conn.run(self._later, self._keys, args)

    async def delivery_remove(self, delivery_id: str) -> None:
        due, payload, meta = self._keys

        async def run() -> Any:
            async with self.conn.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(due, delivery_id)
                pipe.hdel(payload, delivery_id)
                pipe.hdel(meta, delivery_id)
                return await pipe.execute()

        await self.conn.call(run)
