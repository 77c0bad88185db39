"""Usage counters and listings under names the caller gives (a team's, a gallery's)."""

from __future__ import annotations

from typing import Protocol

USAGE_TTL_S = 400 * 86400.0


class UsageCounts(Protocol):
    async def usage_add(self, name: str, day: str, counts: dict[str, int]) -> None:
        """Add to the counters kept under `name` for one UTC day (kept for USAGE_TTL_S)."""
        ...

    async def usage_get(self, name: str, days: list[str]) -> dict[str, dict[str, int]]:
        """The counters under `name` per day, for the days asked (missing days absent)."""
        ...


class Listings(Protocol):
    async def index_add(self, name: str, member: str, score: float) -> None:
        """Put `member` into the ordered index `name` (a gallery: image id by created time)."""
        ...

    async def index_page(
        self, name: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        """Up to `limit` (member, score) pairs scored below `before` (None: all), highest first."""
        ...

    async def index_remove(self, name: str, members: list[str]) -> None:
        """Take `members` out of the index; members it does not hold are ignored."""
        ...

    async def list_push(self, name: str, item: bytes, keep: int) -> None:
        """Prepend `item` to the capped list `name`, which keeps only its newest `keep` items."""
        ...

    async def list_read(self, name: str, limit: int) -> list[bytes]:
        """The newest `limit` items of a capped list, newest first."""
        ...
