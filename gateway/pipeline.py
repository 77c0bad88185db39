"""The image pipeline: a validated request → admission → routing → rehost → settlement.

One service with the parts a request flows through, and nothing of HTTP: the handler decodes
the request and encodes the answer, this runs the jobs in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway import offload, pricing
from gateway.cache import ImageMeta, ResultCache, StoredImage
from gateway.cache.rehost import Rehoster
from gateway.catalog import MODELS, REFERENCE_KEYS, ModelSpec
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    RehostFailed,
    UpstreamError,
)
from gateway.image_header import reference_sizes
from gateway.limits import TeamLimiter, Ticket
from gateway.links import Links
from gateway.media import b64encode, to_data_url
from gateway.metrics import Metrics
from gateway.pricing import PriceTable
from gateway.requests import ParsedRequest, Reference
from gateway.routing import Candidate, Outcome, Router
from gateway.settings import Settings, TeamSettings

log = logging.getLogger("gateway")

OnStored = Callable[[StoredImage], Awaitable[None]]


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


class ImagePipeline:
    def __init__(
        self,
        settings: Settings,
        links: Links,
        cache: ResultCache,
        router: Router,
        rehoster: Rehoster,
        limiter: TeamLimiter,
        metrics: Metrics,
        on_stored: OnStored,
    ) -> None:
        self.settings = settings
        self.links = links
        self.cache = cache
        self.router = router
        self.rehoster = rehoster
        self.limiter = limiter
        self.metrics = metrics
        self.on_stored = on_stored
        self.prices = PriceTable(settings.prices, {u.name: u.prices for u in settings.upstreams})

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

    def plan(self, parsed: ParsedRequest, spec: ModelSpec) -> list[Candidate]:
        return self.router.plan(parsed, spec)

    async def inline_own_links(
        self, candidates: list[Candidate], refs: tuple[Reference, ...]
    ) -> list[Candidate]:
        """Own durable links become data URLs: an upstream cannot reach a private gateway."""
        own = [r for r in refs if self.links.own(r.value)]
        if not own or not self.settings.cache.inline_own_urls:
            return candidates
        inlined: dict[str, str] = {}
        for ref in own:
            image = await self.links.by_url(ref.value)
            if image is None:
                raise InvalidRequest(
                    f"'{ref.param}' is not a known image of this gateway.", param=ref.param
                )
            data = await self.cache.read(image)
            inlined[ref.value] = await offload.run(len(data), to_data_url, data, image.content_type)
        return [
            Candidate(
                c.route,
                {k: inlined.get(v, v) if isinstance(v, str) else v for k, v in c.body.items()},
            )
            for c in candidates
        ]

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

    async def admit(self, team: TeamSettings, request_id: str, n: int, plan: JobPlan) -> Ticket:
        """Reserve n jobs at their upper bound; refused with the team's 429."""
        return await self.limiter.admit(team, request_id, n, plan.bound_micros * n)

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
            await self.on_stored(image)
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
            entry["b64_json"] = await offload.run(len(data), b64encode, data)
        else:
            entry["url"] = self.links.url(delivered.image)
        if delivered.outcome.result.revised_prompt:
            entry["revised_prompt"] = delivered.outcome.result.revised_prompt
        if delivered.seed is not None:
            entry["seed"] = delivered.seed
        return entry
