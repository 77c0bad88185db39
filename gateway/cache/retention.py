"""Retention: results older than `cache.retention_days` leave the cache in a background sweep.

Each pass reads at most `cache.sweep_batch` records, resuming after the last id the previous
pass saw and wrapping around at the end, so a pass costs the same however large the cache is.
Replicas sharing Redis share one lease-lock: the holder sweeps and renews it every pass; the
others skip until its lease lapses (a dead holder is replaced within one lease).

Each pass also removes what a crash left half-made among the ids it covered (`remove_strays`),
and a start-up clears the whole cache of it; only leftovers older than STRAY_AGE_S go, far
older than any store still running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from gateway.cache.base import ResultCache, StoredImage
from gateway.errors import ServiceUnavailable
from gateway.metrics import Metrics
from gateway.settings import CacheSettings
from gateway.state.locks.base import Locks

log = logging.getLogger("gateway.retention")

LOCK = "retention"
DAY_S = 86400.0
DELETES_IN_FLIGHT = 8
STRAY_AGE_S = 3600.0

Removed = Callable[[list[StoredImage]], Awaitable[None]]
"""Told which images a pass deleted (the console gallery drops them from its index)."""


class RetentionSweep:
    def __init__(
        self,
        cache: ResultCache,
        locks: Locks,
        settings: CacheSettings,
        metrics: Metrics,
        on_removed: Removed | None = None,
    ) -> None:
        self.cache = cache
        self.on_removed = on_removed
        self.locks = locks
        self.metrics = metrics
        self.max_age_s = settings.retention_days * DAY_S
        self.interval_s = settings.sweep_interval_s
        self.batch = settings.sweep_batch
        self.lease_s = 2 * settings.sweep_interval_s + 60.0
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.cursor: str | None = None
        self.stray_age_s = max(STRAY_AGE_S, 2 * settings.download_timeout_s)
        self.deleted = Counter(
            "gateway_retention_deleted",
            "Results removed by the retention sweep",
            registry=metrics.registry,
        )

    @property
    def enabled(self) -> bool:
        """`retention_days = 0` keeps results forever."""
        return self.max_age_s > 0

    async def run_forever(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except (ServiceUnavailable, OSError) as exc:
                log.warning("retention sweep failed", extra={"error": str(exc)})
            await asyncio.sleep(self.interval_s)

    async def sweep_once(self) -> int:
        """One bounded pass, if this process holds the lock; how many results it removed."""
        if not await self.locks.lock(LOCK, self.owner, self.lease_s):
            return 0
        after = self.cursor
        page = await self.cache.scan(after, self.batch)
        self.cursor = page[-1].id if len(page) >= self.batch else None
        await self._remove_strays(after, self.cursor)
        cutoff = time.time() - self.max_age_s
        expired = [image for image in page if image.created < cutoff]
        gate = asyncio.Semaphore(DELETES_IN_FLIGHT)

        async def remove(image: StoredImage) -> bool:
            async with gate:
                try:
                    await self.cache.delete(image)
                except (ServiceUnavailable, OSError) as exc:
                    log.warning("retention delete failed", extra={"error": str(exc)})
                    return False
            self.deleted.inc()
            return True

        outcomes = await asyncio.gather(*(remove(image) for image in expired))
        removed = sum(outcomes)
        if removed:
            self.metrics.cache_objects.inc(-removed)
            log.info("retention sweep", extra={"deleted": removed, "examined": len(page)})
            if self.on_removed is not None:
                gone = [image for image, ok in zip(expired, outcomes, strict=True) if ok]
                await self.on_removed(gone)
        return removed

    async def clear_strays(self) -> None:
        """At start-up: a crash just before may have left leftovers anywhere in the cache."""
        try:
            await self._remove_strays(None, None)
        except (ServiceUnavailable, OSError) as exc:
            log.warning("stray sweep failed", extra={"error": str(exc)})

    async def _remove_strays(self, after: str | None, upto: str | None) -> None:
        removed = await self.cache.remove_strays(after, upto, self.stray_age_s)
        if removed:
            log.info("stray files removed", extra={"removed": removed})

    async def stop(self) -> None:
        """Hand the lock on at once rather than after the lease."""
        try:
            await self.locks.unlock(LOCK, self.owner)
        except ServiceUnavailable:
            return
