"""Usage counters and listings in this process."""

from __future__ import annotations

import bisect
from collections import defaultdict, deque


class MemoryUsage:
    def __init__(self) -> None:
        self._usage: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)

    async def usage_add(self, name: str, day: str, counts: dict[str, int]) -> None:
        bucket = self._usage[name].setdefault(day, {})
        for field, value in counts.items():
            bucket[field] = bucket.get(field, 0) + value

    async def usage_get(self, name: str, days: list[str]) -> dict[str, dict[str, int]]:
        stored = self._usage.get(name, {})
        return {day: dict(stored[day]) for day in days if day in stored}


class MemoryListings:
    def __init__(self) -> None:
        self._indexes: dict[str, SortedIndex] = defaultdict(SortedIndex)
        self._lists: dict[str, deque[bytes]] = {}

    async def index_add(self, name: str, member: str, score: float) -> None:
        self._indexes[name].add(member, score)

    async def index_page(
        self, name: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        index = self._indexes.get(name)
        return index.page(before, limit) if index is not None else []

    async def index_remove(self, name: str, members: list[str]) -> None:
        index = self._indexes.get(name)
        if index is not None:
            for member in members:
                index.remove(member)

    async def list_push(self, name: str, item: bytes, keep: int) -> None:
        items = self._lists.get(name)
        if items is None or items.maxlen != keep:
            items = self._lists[name] = deque(items or (), maxlen=keep)
        items.appendleft(item)

    async def list_read(self, name: str, limit: int) -> list[bytes]:
        return list(self._lists.get(name, ()))[:limit]


class SortedIndex:
    """Members kept in score order, so a page is one bisection and a slice."""

    def __init__(self) -> None:
        self._entries: list[tuple[float, str]] = []
        self._scores: dict[str, float] = {}

    def add(self, member: str, score: float) -> None:
        self.remove(member)
        self._scores[member] = score
        bisect.insort(self._entries, (score, member))

    def remove(self, member: str) -> None:
        score = self._scores.pop(member, None)
        if score is not None:
            del self._entries[bisect.bisect_left(self._entries, (score, member))]

    def page(self, before: float | None, limit: int) -> list[tuple[str, float]]:
        end = len(self._entries) if before is None else bisect.bisect_left(self._entries, (before,))
        chosen = self._entries[max(0, end - limit) : end]
        return [(member, score) for score, member in reversed(chosen)]
