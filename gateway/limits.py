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

from gateway.errors import GatewayError, QuotaExceeded, RateLimited
from gateway.metrics import Metrics
from gateway.pricing import MICROS
from gateway.settings import TeamSettings
from gateway.state.admission.base import AdmissionCounters, Counters, Limits, Reservation

DAY_FORMAT = "%Y%m%d"
MONTH_FORMAT = "%Y%m"
"""Counters and usage are named by UTC day and month in these formats, on every replica."""
log = logging.getLogger("gateway.limits")


@dataclass
class Ticket:
    """An admitted request: what it reserved, and the rate-limit headers to answer with."""

    team: TeamSettings
    request_id: str
    reservation: Reservation
    images: int
    reserved_micros: int
    headers: dict[str, str] = field(default_factory=dict)


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `59.4s`."""
    if seconds < 60:
        return f"{max(seconds, 0):.3g}s"
    minutes, rest = divmod(int(math.ceil(seconds)), 60)
    return f"{minutes}m{rest}s"


def counters_for(team: TeamSettings) -> Counters:
    """The names a team's request is counted under now: its window, UTC day and month."""
    now = time.gmtime()
    return Counters(team.name, time.strftime(DAY_FORMAT, now), time.strftime(MONTH_FORMAT, now))


def ratelimit_headers(team: TeamSettings, remaining: int, reset_s: float) -> dict[str, str]:
    """OpenAI's rate-limit headers for a team with an rpm limit (none without one)."""
    if team.rpm is None:
        return {}
    return {
        "x-ratelimit-limit-requests": str(team.rpm),
        "x-ratelimit-remaining-requests": str(max(remaining, 0)),
        "x-ratelimit-reset-requests": _duration(reset_s),
    }


def refusal(reason: str, wait_s: float, headers: dict[str, str]) -> GatewayError:
    """The answer to a refused admission: 429 with retry-after, or 429 insufficient_quota."""
    if reason in ("rpm", "concurrency"):
        what = "requests per minute" if reason == "rpm" else "requests in flight"
        return RateLimited(
            f"Rate limit reached for your team's {what}; retry after {wait_s:.1f}s.",
            headers={**headers, "retry-after": str(max(1, math.ceil(wait_s)))},
        )
    what = "daily image quota" if reason == "images" else "monthly budget"
    return QuotaExceeded(f"Your team's {what} is used up.", headers=headers)


class TeamLimiter:
    def __init__(self, counters: AdmissionCounters, metrics: Metrics) -> None:
        self.counters = counters
        self.metrics = metrics
        self._running: dict[str, Ticket] = {}

    async def admit(
        self, team: TeamSettings, request_id: str, images: int, cost_micros: int
    ) -> Ticket:
        """Reserve `images` and `cost_micros` (an upper bound of what the jobs can cost)."""
        names = counters_for(team)
        budget = team.monthly_budget_usd
        limits = Limits(
            team.rpm,
            team.max_concurrency,
            team.images_per_day,
            None if budget is None else round(budget * MICROS),
        )
        verdict = await self.counters.admit(names, request_id, limits, images, cost_micros)
        headers = ratelimit_headers(team, verdict.remaining_requests, verdict.retry_after_s)
        if verdict.reservation is None:
            reason = verdict.refused or "settled"
            self.metrics.rate_limited.labels(team=team.name, reason=reason).inc()
            raise refusal(reason, verdict.retry_after_s, headers)
        ticket = Ticket(team, request_id, verdict.reservation, images, cost_micros, headers)
        self._running[request_id] = ticket
        return ticket

    async def settle(self, ticket: Ticket, delivered: int, spent_micros: int) -> None:
        """Keep what was delivered and what it really cost, give back the rest of the
        reservation, and free the in-flight lease.

        The state gives back only what the request's own stored reservation still holds, so a
        reservation lost with a Redis restart never turns into quota given away.
        """
        self._running.pop(ticket.request_id, None)
        try:
            await self.counters.settle(ticket.reservation, delivered, spent_micros)
        except GatewayError as exc:
            log.warning(
                "settlement skipped; the lease expires by itself",
                extra={
                    "team": ticket.team.name,
                    "request_id": ticket.request_id,
                    "error": str(exc),
                },
            )

    def adopt(self, ticket: Ticket) -> None:
        """Renew a reservation another replica made (an async job taken over) until settled."""
        self._running[ticket.request_id] = ticket

    async def renew_forever(self) -> None:
        """Keep the in-flight leases of running requests alive (run under the supervisor)."""
        while True:
            await asyncio.sleep(self.counters.lease_s / 3)
            by_team: dict[str, list[Reservation]] = {}
            for ticket in list(self._running.values()):
                by_team.setdefault(ticket.team.name, []).append(ticket.reservation)
            for held in by_team.values():
                try:
                    await self.counters.renew(held)
                except GatewayError:
                    continue
