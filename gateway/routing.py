"""Which upstream and key serve a job, and what happens when one cannot.

Upstreams serving a model are tried in priority order, equal priorities taking turns. An
upstream that cannot honour the request is skipped at planning time; at run time a job that
was not accepted moves to the next usable key, then to the next upstream. A job that may have
been charged is never sent again.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.catalog import ModelSpec
from gateway.errors import (
    GatewayError,
    ModelNotFound,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)
from gateway.keypool import KeyPool, Lease
from gateway.mapping import shape
from gateway.metrics import Metrics
from gateway.requests import ParsedRequest
from gateway.upstreams import Upstream, UpstreamResult

DOWN_FIRST_S = 2.0
DOWN_MAX_S = 60.0
log = logging.getLogger("gateway.routing")


@dataclass
class Reachability:
    """Whether an upstream answers connections: after a connect failure it is passed over for
    a few seconds, growing while the failures last, so a dead upstream costs one connect
    timeout per request and per upstream, never one per key."""

    down_until: float = 0.0
    reason: str | None = None
    streak: int = 0

    def down(self, now: float) -> bool:
        return now < self.down_until

    def failed(self, reason: str, now: float) -> float:
        self.streak += 1
        pause = min(DOWN_FIRST_S * 2.0 ** (self.streak - 1), DOWN_MAX_S)
        self.down_until = now + pause
        self.reason = reason
        return pause

    def answered(self) -> None:
        self.down_until, self.reason, self.streak = 0.0, None, 0


@dataclass
class Route:
    upstream: Upstream
    pool: KeyPool
    reach: Reachability = field(default_factory=Reachability)

    @property
    def name(self) -> str:
        return self.upstream.name

    @property
    def priority(self) -> int:
        return self.upstream.settings.priority


@dataclass(frozen=True)
class Candidate:
    route: Route
    body: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    result: UpstreamResult
    upstream: str
    key_fingerprint: str
    upstream_seconds: float


class Router:
    def __init__(self, routes: list[Route], metrics: Metrics) -> None:
        self.routes = routes
        self.metrics = metrics
        self._turn = itertools.count()

    def serving(self, model: str) -> list[Route]:
        """Routes for `model` by priority, in configuration order within a priority."""
        routes = [r for r in self.routes if model in r.upstream.settings.models]
        return sorted(routes, key=lambda r: r.priority)

    def plan(self, parsed: ParsedRequest, spec: ModelSpec) -> list[Candidate]:
        """The upstreams that can honour the request, with their bodies; else the first one's 400.

        "First" is by priority and configuration order, so the answer does not depend on turns.
        """
        routes = self.serving(spec.id)
        if not routes:
            raise ModelNotFound(f"No upstream is configured for model '{spec.id}'.", param="model")
        candidates: list[Candidate] = []
        first_error: GatewayError | None = None
        for route in routes:
            try:
                candidates.append(Candidate(route, shape(parsed, spec, route.upstream.kind)))
            except GatewayError as exc:
                first_error = first_error or exc
        if not candidates:
            assert first_error is not None
            raise first_error
        return candidates

    async def run(self, candidates: list[Candidate], extra: dict[str, Any]) -> Outcome:
        """Run one job on the first upstream and key that accept it."""
        retry_after: list[float] = []
        reasons: list[str] = []
        for candidate in self._take_turns(candidates):
            route = candidate.route
            now = time.time()
            if route.reach.down(now):
                reasons.append(_named(route, route.reach.reason or "unreachable"))
                retry_after.append(route.reach.down_until - now)
                continue
            body = {**candidate.body, **extra}
            tried: set[str] = set()
            while True:
                try:
                    lease = await route.pool.acquire(body["model"], exclude=tried)
                except UpstreamRejected as exc:
                    retry_after.append(exc.retry_after or 1.0)
                    reasons.append(_named(route, exc.detail))
                    self.metrics.upstream_errors.labels(upstream=route.name, kind=exc.reason).inc()
                    break
                tried.add(lease.key.fingerprint)
                try:
                    return await self._attempt(route, lease, body)
                except UpstreamRejected as exc:
                    await self._note_rejection(route.pool, lease, exc)
                    self.metrics.upstream_errors.labels(upstream=route.name, kind=exc.reason).inc()
                    reasons.append(_named(route, exc.detail))
                    if exc.reason == "unreachable":
                        self._pass_over(route, exc.detail)
                        retry_after.append(route.reach.down_until - time.time())
                        break
                    route.reach.answered()
                finally:
                    await route.pool.release(lease)
        wait = min(retry_after, default=1.0)
        why = "; ".join(dict.fromkeys(reasons)) or "no upstream could take the job"
        raise UpstreamUnavailable(
            f"Every upstream that serves this model is unavailable right now ({why}); "
            "try again later.",
            headers={"retry-after": str(max(1, round(wait)))},
        )

    def _pass_over(self, route: Route, reason: str) -> None:
        pause = route.reach.failed(reason, time.time())
        log.warning(
            "upstream passed over",
            extra={"upstream": route.name, "reason": reason, "for_s": pause},
        )

    def _take_turns(self, candidates: list[Candidate]) -> list[Candidate]:
        """This job's order: equal priorities rotate job by job, so they share the load."""
        turn = next(self._turn)
        ordered: list[Candidate] = []
        for _, same in itertools.groupby(candidates, key=lambda c: c.route.priority):
            group = list(same)
            shift = turn % len(group)
            ordered += group[shift:] + group[:shift]
        return ordered

    async def _attempt(self, route: Route, lease: Lease, body: dict[str, Any]) -> Outcome:
        started = time.perf_counter()
        outcome = "ok"
        try:
            result = await route.upstream.generate(body, lease.key.key)
        except UpstreamRejected:
            outcome = "rejected"
            raise
        except UpstreamError as exc:
            outcome = "timeout" if exc.status == 504 else "error"
            await route.pool.failed(lease, exc.message)
            self.metrics.upstream_errors.labels(upstream=route.name, kind=outcome).inc()
            raise
        except GatewayError as exc:
            outcome = "moderated" if exc.code == "content_policy_violation" else "refused"
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.upstream_duration.labels(
                upstream=route.name, model=body["model"], outcome=outcome
            ).observe(elapsed)
        await route.pool.succeeded(lease)
        route.reach.answered()
        return Outcome(result, route.name, lease.key.fingerprint, elapsed)

    @staticmethod
    async def _note_rejection(pool: KeyPool, lease: Lease, exc: UpstreamRejected) -> None:
        if exc.reason == "rate_limited":
            await pool.rate_limited(lease, exc.retry_after)
        elif exc.reason in ("bad_key", "no_credit"):
            await pool.disable(lease, exc.detail)
        else:
            lease.key.last_error = exc.detail


def _named(route: Route, detail: str) -> str:
    return detail if detail.startswith(f"{route.name}:") else f"{route.name}: {detail}"
