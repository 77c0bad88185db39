"""The gateway's runtime state, built once from settings and held by the app.

It owns the pooled HTTP clients, the key pools, the router, the cache and the metrics, and runs
one image request from a validated body to the list of answered images.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from typing import Any

from gateway import pricing
from gateway.cache import ImageMeta, ResultCache, StoredImage, open_cache
from gateway.cache.rehost import Rehoster
from gateway.cache.retention import RetentionSweep
from gateway.catalog import ACCOUNT_CONCURRENCY, MODELS, REFERENCE_KEYS, ModelSpec
from gateway.console.gallery import Gallery
from gateway.console.recent import RecentErrors
from gateway.errors import (
    CacheUnavailable,
    ConfigError,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    RehostFailed,
    UpstreamError,
)
from gateway.idempotency import Idempotency
from gateway.image_header import reference_sizes
from gateway.keypool import KeyPool
from gateway.keys import KeyRing, hash_key
from gateway.limits import TeamLimiter, Ticket
from gateway.media import to_data_url
from gateway.metrics import Metrics
from gateway.pricing import PriceTable
from gateway.requests import ParsedRequest, Reference
from gateway.routing import Candidate, Outcome, Route, Router
from gateway.settings import Settings, TeamSettings
from gateway.state import open_state
from gateway.upstreams import build_upstream

log = logging.getLogger("gateway")

IMAGE_PATH = "/images/"
CACHE_RECOUNT_S = 60.0


@dataclass(frozen=True)
class JobPlan:
    """What admission reserves per job, and the references' size every job shares."""

    bound_micros: int
    input_mp: int


@dataclass(frozen=True)
class Delivered:
    """One answered image: where it lives and how it was made."""

    image: StoredImage
    outcome: Outcome
    seed: int | None
    rehost_seconds: float


class Gateway:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.base_url = settings.server.base_url
        self.own_prefix = self.base_url + IMAGE_PATH
        self.max_body_bytes = int(settings.server.max_body_mb * 1024 * 1024)
        self.teams = {team.name: team for team in settings.teams}
        self.client_keys = KeyRing(_team_hashes(settings.teams))
        self.cache: ResultCache = open_cache(settings.cache)
        self.rehoster = Rehoster(settings.cache, self.cache, self.metrics)
        self.state = open_state(settings.state, self.metrics)
        self.gallery = Gallery(self.state, self.cache)
        self.recent_errors = RecentErrors(self.state)
        self.retention = RetentionSweep(
            self.cache, self.state, settings.cache, self.metrics, on_removed=self.gallery.remove
        )
        self.router = Router([self._route(u) for u in settings.upstreams], self.metrics)
        self.limiter = TeamLimiter(self.state, self.metrics)
        self.prices = PriceTable(settings.prices, {u.name: u.prices for u in settings.upstreams})
        longest = max((u.timeout_s for u in settings.upstreams), default=300.0)
        self.idempotency = Idempotency(self.state, self.cache, wait_s=longest + 120.0)
        self._tasks: list[asyncio.Task[Any]] = []
        for team in settings.teams:
            self.metrics.add_team(team.name, team.monthly_budget_usd)

    def start(self) -> None:
        """Background work that needs a running loop: lease renewal, key pool upkeep."""
        self.limiter.start()
        self._tasks = [asyncio.create_task(r.pool.run_maintenance()) for r in self.router.routes]
        self._tasks.append(asyncio.create_task(self._recount_forever()))
        if self.retention.enabled:
            self._tasks.append(asyncio.create_task(self.retention.run_forever()))
        if self.settings.state.backend == "memory":
            # Memory state starts empty: index the cache again so galleries survive a restart.
            self._tasks.append(asyncio.create_task(self.gallery.rebuild()))

    async def count_cache(self) -> None:
        """`gateway_cache_objects` from the cache's own count, which also sees other writers."""
        try:
            self.metrics.cache_objects.set(await self.cache.count())
        except (OSError, CacheUnavailable) as exc:
            log.warning("cache count failed", extra={"error": str(exc)})

    async def _recount_forever(self) -> None:
        while True:
            await asyncio.sleep(CACHE_RECOUNT_S)
            await self.count_cache()

    def _route(self, upstream_settings: Any) -> Route:
        upstream = build_upstream(upstream_settings)
        unknown = [m for m in upstream_settings.models if m not in MODELS]
        if unknown:
            raise ConfigError(f"upstream {upstream.name!r}: unknown models {', '.join(unknown)}")
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
            self.metrics,
            self.state,
            model_caps=caps,
            account_cap=account_cap or ACCOUNT_CONCURRENCY.get(upstream.kind),
            check=upstream.check_key,
            recheck_s=upstream_settings.recheck_s,
        )
        return Route(upstream, pool)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.limiter.stop()
        await self.retention.stop()
        await self.state.aclose()
        await self.rehoster.aclose()
        for route in self.router.routes:
            await route.upstream.aclose()

    def team_for_key(self, key: str) -> TeamSettings | None:
        name = self.client_keys.owner(key)
        return self.teams.get(name) if name else None

    def model(self, model_id: str | None, team: TeamSettings) -> ModelSpec:
        """The catalog entry for a model id or alias (else the team's default), if allowed."""
        model_id = model_id or team.default_model
        if model_id is None:
            raise InvalidRequest(
                "Missing required parameter: 'model' (your team has no default_model).",
                param="model",
                code="missing_required_parameter",
            )
        resolved = self.settings.aliases.get(model_id, model_id)
        spec = MODELS.get(resolved)
        if spec is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
        if "*" not in team.models and resolved not in team.models and model_id not in team.models:
            raise PermissionDenied(f"Your team may not use the model '{model_id}'.", param="model")
        return spec

    async def inline_own_links(
        self, candidates: list[Candidate], refs: tuple[Reference, ...]
    ) -> list[Candidate]:
        """Own durable links become data URLs: an upstream cannot reach a private gateway."""
        own = [r for r in refs if r.value.startswith(self.own_prefix)]
        if not own or not self.settings.cache.inline_own_urls:
            return candidates
        inlined: dict[str, str] = {}
        for ref in own:
            image = await self.lookup_link(ref.value)
            if image is None:
                raise InvalidRequest(
                    f"'{ref.param}' is not a known image of this gateway.", param=ref.param
                )
            inlined[ref.value] = to_data_url(await self.cache.read(image), image.content_type)
        return [
            Candidate(
                c.route,
                {k: inlined.get(v, v) if isinstance(v, str) else v for k, v in c.body.items()},
            )
            for c in candidates
        ]

    async def lookup_link(self, url: str) -> StoredImage | None:
        """The stored image behind one of this gateway's durable links."""
        name = url.removeprefix(self.own_prefix).split("?", 1)[0]
        return await self.lookup_name(name)

    async def lookup_name(self, name: str) -> StoredImage | None:
        image_id, _, ext = name.partition(".")
        image = await self.cache.get(image_id)
        if image is None or image.filename != name:
            return None
        return image

    def link(self, image: StoredImage) -> str:
        return self.own_prefix + image.filename

    async def generate(
        self,
        parsed: ParsedRequest,
        spec: ModelSpec,
        candidates: list[Candidate],
        team: TeamSettings,
        request_id: str,
    ) -> list[Delivered]:
        """Run n jobs concurrently on the planned upstreams and rehost every result."""
        req = parsed.body
        prompt = req.prompt if self.settings.cache.keep_prompts else None

        async def job(index: int) -> Delivered:
            extra = {"seed": req.seed + index} if req.seed is not None else {}
            outcome = await self.router.run(candidates, extra)
            seed = extra.get("seed", outcome.result.seed)
            meta = ImageMeta(team.name, spec.id, request_id, outcome.upstream, seed, prompt)
            started = time.perf_counter()
            image = await self._rehost(outcome.result.url, meta)
            delivered = Delivered(image, outcome, seed, time.perf_counter() - started)
            await self.gallery.add(image)
            return delivered

        results = await asyncio.gather(*(job(i) for i in range(req.n)), return_exceptions=True)
        delivered = [r for r in results if isinstance(r, Delivered)]
        failures = [r for r in results if not isinstance(r, Delivered)]
        for failure in failures:
            if not isinstance(failure, GatewayError):
                raise failure
        if not delivered:
            raise failures[0]
        if failures:
            log.warning(
                "partial fan-out",
                extra={
                    "request_id": request_id,
                    "delivered": len(delivered),
                    "failed": len(failures),
                },
            )
        return delivered

    async def _rehost(self, url: str, meta: ImageMeta) -> StoredImage:
        """Rehost one result; a failure gets its own log line: the image was paid for, then lost."""
        try:
            return await self.rehoster.rehost(url, meta)
        except UpstreamError as exc:
            cause = exc.__cause__
            log.warning(
                "rehost failed",
                extra={
                    "request_id": meta.request_id,
                    "team": meta.team,
                    "model": meta.model,
                    "upstream": meta.upstream,
                    "reason": cause.reason if isinstance(cause, RehostFailed) else exc.code,
                    "error": exc.message,
                },
            )
            raise

    async def estimate(self, spec: ModelSpec, candidates: list[Candidate]) -> JobPlan:
        """An upper bound of one job's cost over every upstream that may run it.

        Candidates carry the upstream bodies after own links were inlined, so every reference
        is either a data URL (its size read from the header) or an https link (4 MP).
        """
        values = [v for k in REFERENCE_KEYS if isinstance(v := candidates[0].body.get(k), str)]
        input_mp = pricing.input_mp(await reference_sizes(values))
        bound = 0
        for candidate in candidates:
            output_mp = pricing.requested_output_mp(candidate.body, bool(values))
            size = pricing.JobSize(output_mp, input_mp)
            bound = max(bound, self.prices.cost(candidate.route.name, spec.id, size))
        return JobPlan(bound, input_mp)

    def cost(self, spec: ModelSpec, plan: JobPlan, delivered: Delivered) -> int:
        """What one delivered job cost: the upstream's figure, else the table at its real size."""
        reported = delivered.outcome.result.cost_micros
        if reported is not None:
            return reported
        image = delivered.image
        output_mp = pricing.megapixels(image.width, image.height) if image.width else 1
        size = pricing.JobSize(output_mp, plan.input_mp)
        return self.prices.cost(delivered.outcome.upstream, spec.id, size)

    async def settle(
        self, ticket: Ticket, spec: ModelSpec, plan: JobPlan, delivered: list[Delivered]
    ) -> int:
        """Charge the team what was delivered, give back the rest; the micro-USD charged."""
        spent = sum(self.cost(spec, plan, d) for d in delivered)
        await self.limiter.settle(ticket, len(delivered), spent)
        if delivered:
            team = ticket.team.name
            self.metrics.images.labels(model=spec.id, team=team).inc(len(delivered))
            self.metrics.spend.labels(team=team, model=spec.id).inc(spent / pricing.MICROS)
        return spent

    async def item(self, delivered: Delivered, response_format: str) -> dict[str, Any]:
        """One `data` entry of the response: the durable link or the bytes inline."""
        entry: dict[str, Any] = {}
        if response_format == "b64_json":
            data = await self.cache.read(delivered.image)
            entry["b64_json"] = base64.b64encode(data).decode("ascii")
        else:
            entry["url"] = self.link(delivered.image)
        if delivered.outcome.result.revised_prompt:
            entry["revised_prompt"] = delivered.outcome.result.revised_prompt
        if delivered.seed is not None:
            entry["seed"] = delivered.seed
        return entry


def _team_hashes(teams: list[TeamSettings]) -> dict[str, str]:
    owners: dict[str, str] = {}
    for team in teams:
        for h in team.key_hashes + [hash_key(k) for k in team.keys]:
            if h in owners and owners[h] != team.name:
                raise ConfigError(
                    f"a client key is listed for both {owners[h]!r} and {team.name!r}"
                )
            owners[h] = team.name
    return owners
