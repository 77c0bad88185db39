"""Retention: results older than `cache.retention_days` leave the cache in a background sweep.

Each pass reads at most `cache.sweep_batch` records, resuming after the last id the previous
pass saw and wrapping around at the end, so a pass costs the same however large the cache is.
Replicas sharing Redis share one lease-lock: the holder sweeps and renews it every pass; the
others skip until its lease lapses (a dead holder is replaced within one lease).
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
from gateway.state import State

log = logging.getLogger("gateway.retention")

LOCK = "retention"
DAY_S = 86400.0
DELETES_IN_FLIGHT = 8

Removed = Callable[[list[StoredImage]], Awaitable[None]]
"""Told which images a pass deleted (the console gallery drops them from its index)."""


class RetentionSweep:
    def __init__(
        self,
        cache: ResultCache,
        state: State,
        settings: CacheSettings,
        metrics: Metrics,
        on_removed: Removed | None = None,
    ) -> None:
        self.cache = cache
        self.on_removed = on_removed
        self.state = state
        self.metrics = metrics
        self.max_age_s = settings.retention_days * DAY_S
        self.interval_s = settings.sweep_interval_s
        self.batch = settings.sweep_batch
        self.lease_s = 2 * settings.sweep_interval_s + 60.0
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.cursor: str | None = None
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
        if not await self.state.lock(LOCK, self.owner, self.lease_s):
            return 0
        page = await self.cache.scan(self.cursor, self.batch)
        self.cursor = page[-1].id if len(page) >= self.batch else None
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

    async def stop(self) -> None:
        """Hand the lock on at once rather than after the lease."""
        try:
            await self.state.unlock(LOCK, self.owner)
        except ServiceUnavailable:
            return
