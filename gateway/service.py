"""The gateway's live parts, built from checked settings inside the app's lifespan.

`open_parts` opens what holds resources (the state's pool, the upstreams' HTTP clients, the
rehost session, the cache store), runs the background work under a supervisor, and closes it
all again on the way out. It knows nothing of HTTP or of the console: the gallery comes in as
an `ImageIndex` factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from gateway.cache import ResultCache, StoredImage, open_cache
from gateway.cache.rehost import Rehoster
from gateway.cache.retention import RetentionSweep
from gateway.catalog import ACCOUNT_CONCURRENCY, MODELS
from gateway.errors import CacheUnavailable
from gateway.idempotency import Idempotency
from gateway.jobs.service import Jobs
from gateway.keypool import KeyPool
from gateway.limits import TeamLimiter
from gateway.links import Links
from gateway.metrics import Metrics
from gateway.pipeline import ImagePipeline
from gateway.routing import Route, Router
from gateway.settings import Settings, UpstreamSettings
from gateway.state import open_state
from gateway.state.base import State
from gateway.state.keys.base import KeySlots
from gateway.state.records.base import Listings
from gateway.supervisor import TaskSupervisor
from gateway.upstreams import build_upstream
from gateway.webhooks.worker import Webhooks

log = logging.getLogger("gateway")

CACHE_RECOUNT_S = 60.0


class ImageIndex(Protocol):
    """Who lists stored images (the console's gallery): told of each new and removed one."""

    async def add(self, image: StoredImage) -> None: ...

    async def remove(self, images: list[StoredImage]) -> None: ...

    async def rebuild(self) -> int: ...


Index = TypeVar("Index", bound=ImageIndex)


@dataclass(frozen=True)
class Parts(Generic[Index]):
    """Everything a running gateway serves from; each handler is handed only its fields."""

    cache: ResultCache
    state: State
    links: Links
    router: Router
    limiter: TeamLimiter
    idempotency: Idempotency
    pipeline: ImagePipeline
    index: Index
    jobs: Jobs


@contextlib.asynccontextmanager
async def open_parts(
    settings: Settings, metrics: Metrics, index: Callable[[Listings, ResultCache], Index]
) -> AsyncIterator[Parts[Index]]:
    """The live parts for the lifespan: built, started, and on exit stopped and closed."""
    cache = open_cache(settings.cache)
    state = open_state(settings.state, metrics, jobs_folder(settings))
    images = index(state.listings, cache)
    trust_env = settings.server.trust_env
    rehoster = Rehoster(settings.cache, cache, metrics, trust_env=trust_env)
    routes = [_route(u, metrics, state.keys, trust_env) for u in settings.upstreams]
    router = Router(routes, metrics)
    limiter = TeamLimiter(state.admission, metrics)
    retention = RetentionSweep(
        cache, state.locks, settings.cache, metrics, on_removed=images.remove
    )
    longest = max((u.timeout_s for u in settings.upstreams), default=300.0)
    links = Links(cache, settings.server.base_url)
    pipeline = ImagePipeline(settings, links, cache, router, rehoster, limiter, metrics, images.add)
    idempotency = Idempotency(state.idempotency, cache, wait_s=longest + 120.0)
    teams = {team.name: team for team in settings.teams}
    webhooks = Webhooks(settings, state.deliveries, metrics)
    jobs = Jobs(
        state.jobs,
        pipeline,
        router,
        idempotency,
        state.usage,
        metrics,
        teams,
        lease_s=settings.state.lease_s,
        retention_s=settings.jobs.retention_h * 3600,
        on_end=webhooks.job_ended,
    )
    parts = Parts(cache, state, links, router, limiter, idempotency, pipeline, images, jobs)
    supervisor = TaskSupervisor()
    try:
        supervisor.start("lease renewal", limiter.renew_forever)
        for route in router.routes:
            supervisor.start(f"key upkeep {route.name}", route.pool.run_maintenance)
        supervisor.start("job leases", jobs.run_forever)
        supervisor.start("webhook deliveries", webhooks.run_forever)
        supervisor.start("cache recount", lambda: _recount_forever(cache, metrics))
        if retention.enabled:
            supervisor.start("retention sweep", retention.run_forever)
        if settings.state.backend == "memory":
            # Memory state starts empty: index the cache again so galleries survive a restart.
            supervisor.start("gallery rebuild", images.rebuild)
        await retention.clear_strays()
        await count_cache(cache, metrics)
        yield parts
    finally:
        await supervisor.aclose()
        await jobs.aclose()
        await webhooks.aclose()
        await retention.stop()
        await state.aclose()
        await rehoster.aclose()
        for route in router.routes:
            await route.upstream.aclose()


def jobs_folder(settings: Settings) -> Path | None:
    """Where memory state keeps job records across a restart: beside a filesystem cache."""
    if settings.state.backend != "memory" or settings.cache.backend != "filesystem":
        return None
    return settings.cache.dir / ".jobs"


async def count_cache(cache: ResultCache, metrics: Metrics) -> None:
    """`gateway_cache_objects` from the cache's own count, which also sees other writers."""
    try:
        metrics.cache_objects.set(await cache.count())
    except (OSError, CacheUnavailable) as exc:
        log.warning("cache count failed", extra={"error": str(exc)})


async def _recount_forever(cache: ResultCache, metrics: Metrics) -> None:
    while True:
        await asyncio.sleep(CACHE_RECOUNT_S)
        await count_cache(cache, metrics)


def _route(
    upstream_settings: UpstreamSettings, metrics: Metrics, keys: KeySlots, trust_env: bool
) -> Route:
    upstream = build_upstream(upstream_settings, trust_env=trust_env)
    caps = {
        m: cap
        for m in upstream_settings.models
        if (cap := MODELS[m].max_concurrency_per_account.get(upstream.kind)) is not None
    }
    account_cap = upstream_settings.max_concurrency
    pool = KeyPool(
        upstream.name,
        upstream_settings.resolved_keys(),
        upstream.max_per_key,
        metrics,
        keys,
        model_caps=caps,
        account_cap=account_cap or ACCOUNT_CONCURRENCY.get(upstream.kind),
        check=upstream.check_key,
        recheck_s=upstream_settings.recheck_s,
    )
    return Route(upstream, pool)
