"""A team already at its rpm or concurrency is refused before its request body is read.

Admission (`TeamLimiter.admit`) needs the parsed body (how many images, what they cost), so
it runs only after a body of up to `server.max_body_mb` has been received and parsed. This
check needs only the team, known from the key in the headers: it reads the live counters
without reserving anything and refuses with the very answer admission would give. Admission
still runs afterwards and stays the one that decides; the check only spares the body.
"""

from __future__ import annotations

from gateway import usage
from gateway.errors import GatewayError
from gateway.limits import TeamLimiter, counters_for, ratelimit_headers, refusal
from gateway.settings import TeamSettings
from gateway.state.records.base import UsageCounts
from gateway.usage import Usage


class RatePrecheck:
    """`await precheck(team)`: the 429 the team would get now, or None."""

    def __init__(self, limiter: TeamLimiter, usage: UsageCounts) -> None:
        self.limiter = limiter
        self.usage = usage

    async def __call__(self, team: TeamSettings) -> GatewayError | None:
        if team.rpm is None and team.max_concurrency is None:
            return None
        try:
            live = await self.limiter.counters.counters_read(counters_for(team))
        except GatewayError:
            return None  # admission meets the outage too, and answers it as configured
        if team.rpm is not None and live.window_requests >= team.rpm:
            reason, wait_s = "rpm", live.window_reset_s
        elif team.max_concurrency is not None and live.in_flight >= team.max_concurrency:
            reason, wait_s = "concurrency", 1.0
        else:
            return None
        remaining = 0 if reason == "rpm" else (team.rpm or 0) - live.window_requests
        headers = ratelimit_headers(team, remaining, wait_s)
        self.limiter.metrics.rate_limited.labels(team=team.name, reason=reason).inc()
        await usage.record(self.usage, team.name, Usage(rate_limited=True))
        return refusal(reason, wait_s, headers)
