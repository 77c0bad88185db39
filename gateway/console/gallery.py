"""Each team's results, newest first, for the console gallery.

The cache keeps every image with its team, but can only be scanned in id order; the gallery is
an index in the state layer (image id scored by its created time, one per team) written once
per stored image. Entries whose image is gone or belongs elsewhere are skipped and dropped when
a page reads them, so a missed removal never shows a broken card or another team's image.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from gateway.cache.base import ResultCache, StoredImage
from gateway.errors import CacheUnavailable, GatewayError, StateUnavailable
from gateway.state.records.base import Listings

log = logging.getLogger("gateway.gallery")

REBUILD_BATCH = 500
MAX_ROUNDS = 4
"""Reads per page at most: many stale entries in a row end a page early, with a cursor."""


def _index(team: str) -> str:
    return f"gallery:{team}"


class Gallery:
    def __init__(self, listings: Listings, cache: ResultCache) -> None:
        self.listings = listings
        self.cache = cache

    async def add(self, image: StoredImage) -> None:
        """One state call per stored image; a state outage costs the card, never the answer."""
        try:
            await self.listings.index_add(_index(image.meta.team), image.id, image.created)
        except GatewayError as exc:
            log.warning(
                "gallery index not updated",
                extra={"request_id": image.meta.request_id, "error": str(exc)},
            )

    async def page(
        self, team: str, before: float | None, limit: int
    ) -> tuple[list[StoredImage], float | None]:
        """Up to `limit` of the team's images created before `before`, newest first, and the
        cursor of the next page (None at the end)."""
        found: list[StoredImage] = []
        cursor = before
        for _ in range(MAX_ROUNDS):
            want = limit - len(found)
            entries = await self.listings.index_page(_index(team), cursor, want + 1)
            chosen = entries[:want]
            images = await asyncio.gather(*(self.cache.get(member) for member, _ in chosen))
            gone = []
            for (member, _), image in zip(chosen, images, strict=True):
                if image is None or image.meta.team != team:
                    gone.append(member)
                else:
                    found.append(image)
            if gone:
                await self.listings.index_remove(_index(team), gone)
            if len(entries) <= want:
                return found, None
            cursor = chosen[-1][1]
            if len(found) >= limit:
                break
        return found, cursor

    async def remove(self, images: list[StoredImage]) -> None:
        """Drop deleted images from their teams' indexes: one state call per team."""
        by_team: dict[str, list[str]] = defaultdict(list)
        for image in images:
            by_team[image.meta.team].append(image.id)
        for team, ids in by_team.items():
            await self.listings.index_remove(_index(team), ids)

    async def rebuild(self) -> int:
        """Index every cached image again: a restarted memory-state gateway keeps its galleries."""
        after: str | None = None
        indexed = 0
        try:
            while True:
                batch = await self.cache.scan(after, REBUILD_BATCH)
                for image in batch:
                    await self.listings.index_add(_index(image.meta.team), image.id, image.created)
                indexed += len(batch)
                if len(batch) < REBUILD_BATCH:
                    break
                after = batch[-1].id
        except (OSError, CacheUnavailable, StateUnavailable) as exc:
            log.warning("gallery rebuild stopped", extra={"error": str(exc)})
        log.info("gallery index rebuilt", extra={"images": indexed})
        return indexed
