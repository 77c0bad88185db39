"""Lease-locks in this process."""

from __future__ import annotations

import time


class MemoryLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[str, float]] = {}

    async def lock(self, name: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        held = self._locks.get(name)
        if held is None or held[0] == owner or held[1] <= now:
            self._locks[name] = (owner, now + ttl_s)
            return True
        return False

    async def unlock(self, name: str, owner: str) -> None:
        if self._locks.get(name, ("", 0.0))[0] == owner:
            del self._locks[name]
