"""Lease-locks in Redis: take, extend and release are each one script (owner checked there)."""

from __future__ import annotations

from gateway.state.connection import RedisConnection


class RedisLocks:
    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self._lock = conn.script("lock")
        self._unlock = conn.script("unlock")

    async def lock(self, name: str, owner: str, ttl_s: float) -> bool:
        key = self.conn.key("lock", name)
        args: list[str | int] = [owner, int(ttl_s * 1000)]
        held = await self.conn.call(lambda: self._lock(keys=[key], args=args))
        return int(held) == 1

    async def unlock(self, name: str, owner: str) -> None:
        key = self.conn.key("lock", name)
        await self.conn.call(lambda: self._unlock(keys=[key], args=[owner]))
