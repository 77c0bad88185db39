"""Team admission: rpm, concurrency, daily images and monthly budget, reserved then settled.

A request reserves its n images and their list price when it is admitted and gives back what
it did not deliver when it ends, so failed and moderated jobs cost the team nothing. Leases
of requests still running are renewed in the background; a dead replica's expire.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from gateway.errors import ApiError, QuotaExceeded, RateLimited
from gateway.metrics import Metrics
from gateway.settings import TeamSettings
from gateway.state.base import Counters, Limits, State, StateUnavailable

MICROS = 1_000_000
log = logging.getLogger("gateway.limits")


@dataclass
class Ticket:
    """An admitted request: what it reserved, and the rate-limit headers to answer with."""

    team: TeamSettings
    request_id: str
    names: Counters
    images: int
    micros_per_image: int
    headers: dict[str, str] = field(default_factory=dict)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `59.4s`."""
    if seconds < 60:
        return f"{max(seconds, 0):.3g}s"
    minutes, rest = divmod(int(math.ceil(seconds)), 60)
    return f"{minutes}m{rest}s"


class TeamLimiter:
    def __init__(self, state: State, prices: dict[str, float], metrics: Metrics) -> None:
        self.state = state
        self.prices = prices
        self.metrics = metrics
        self._running: dict[str, Ticket] = {}
        self._renewer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)

    async def admit(self, team: TeamSettings, request_id: str, model: str, images: int) -> Ticket:
        now = time.gmtime()
        names = Counters(team.name, time.strftime("%Y%m%d", now), time.strftime("%Y%m", now))
        micros = round(self.prices.get(model, 0.0) * MICROS)
        budget = team.monthly_budget_usd
        limits = Limits(
            team.rpm,
            team.max_concurrency,
            team.images_per_day,
            None if budget is None else round(budget * MICROS),
        )
        verdict = await self.state.admit(names, request_id, limits, images, micros * images)
        headers = {}
        if team.rpm is not None:
            headers = {
                "x-ratelimit-limit-requests": str(team.rpm),
                "x-ratelimit-remaining-requests": str(max(verdict.remaining_requests, 0)),
                "x-ratelimit-reset-requests": _duration(verdict.retry_after_s),
            }
        if verdict.refused is not None:
            self.metrics.rate_limited.labels(team=team.name, reason=verdict.refused).inc()
            raise self._refusal(verdict.refused, verdict.retry_after_s, headers)
        ticket = Ticket(team, request_id, names, images, micros, headers)
        self._running[request_id] = ticket
        return ticket

    @staticmethod
    def _refusal(reason: str, wait_s: float, headers: dict[str, str]) -> Exception:
        if reason in ("rpm", "concurrency"):
            what = "requests per minute" if reason == "rpm" else "requests in flight"
            return RateLimited(
                f"Rate limit reached for your team's {what}; retry after {wait_s:.1f}s.",
                headers={**headers, "retry-after": str(max(1, math.ceil(wait_s)))},
            )
        what = "daily image quota" if reason == "images" else "monthly budget"
        return QuotaExceeded(f"Your team's {what} is used up.", headers=headers)

    async def settle(self, ticket: Ticket, delivered: int) -> None:
        """Give back what was reserved but not delivered, and free the in-flight lease."""
        self._running.pop(ticket.request_id, None)
        unused = max(ticket.images - delivered, 0)
        try:
            await self.state.settle(
                ticket.names, ticket.request_id, unused, unused * ticket.micros_per_image
            )
        except (StateUnavailable, ApiError) as exc:
            log.warning(
                "settlement skipped; the lease expires by itself",
                extra={
                    "team": ticket.team.name,
                    "request_id": ticket.request_id,
                    "error": str(exc),
                },
            )

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.state.lease_s / 3)
            by_team: dict[str, list[str]] = {}
            for ticket in list(self._running.values()):
                by_team.setdefault(ticket.team.name, []).append(ticket.request_id)
            for team, ids in by_team.items():
                try:
                    await self.state.renew(team, ids)
                except (StateUnavailable, ApiError):
                    continue
