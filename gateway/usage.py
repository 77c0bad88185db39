"""Per-team daily usage for `GET /admin/usage`, kept in the state layer.

Every image request ends with one record for its team and UTC day, whatever its outcome, so
every replica adds to the same days and the report agrees with the request counters.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway.errors import GatewayError
from gateway.limits import DAY_FORMAT
from gateway.pricing import usd
from gateway.state.records.base import UsageCounts

COUNTS = ("requests", "images", "spend_micros", "errors", "rate_limited")

log = logging.getLogger("gateway.usage")


@dataclass
class Usage:
    """What one image request adds to its team's day."""

    images: int = 0
    spend_micros: int = 0
    error: bool = False
    rate_limited: bool = False

    def counts(self) -> dict[str, int]:
        return {
            "requests": 1,
            "images": self.images,
            "spend_micros": self.spend_micros,
            "errors": int(self.error),
            "rate_limited": int(self.rate_limited),
        }


async def record(counts: UsageCounts, team: str, usage: Usage) -> None:
    """One call per request; a state outage loses the record, never the client's answer."""
    day = time.strftime(DAY_FORMAT, time.gmtime())
    try:
        await counts.usage_add(team, day, usage.counts())
    except GatewayError as exc:
        log.warning("usage not recorded", extra={"team": team, "error": str(exc)})


def _row(counts: dict[str, int]) -> dict[str, Any]:
    row: dict[str, Any] = {name: counts.get(name, 0) for name in COUNTS if name != "spend_micros"}
    row["spend_usd"] = usd(counts.get("spend_micros", 0))
    return row


async def report(
    counts: UsageCounts, teams: list[str], since: date, until: date
) -> list[dict[str, Any]]:
    """Each team's days from `since` to `until` (days without requests left out) and totals."""
    days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    names = [day.strftime(DAY_FORMAT) for day in days]
    result = []
    for team in teams:
        stored = await counts.usage_get(team, names)
        totals = {name: sum(day.get(name, 0) for day in stored.values()) for name in COUNTS}
        rows = [
            {"date": day.isoformat(), **_row(stored[name])}
            for day, name in zip(days, names, strict=True)
            if name in stored
        ]
        result.append({"team": team, "totals": _row(totals), "days": rows})
    return result
