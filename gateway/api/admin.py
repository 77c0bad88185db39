"""The admin API (bearer admin key, checked by middleware): usage, upstream keys, re-enabling.

Keys are only ever shown by fingerprint; the raw key never leaves the key pool.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import usage
from gateway.api.responses import JSONResponse
from gateway.errors import InvalidRequest, NotFound
from gateway.routing import Route, Router
from gateway.state.base import State
from gateway.state.records.base import USAGE_TTL_S

DEFAULT_DAYS = 30
KEPT_DAYS = int(USAGE_TTL_S // 86400)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

log = logging.getLogger("gateway.admin")


def _since(raw: str | None, today: date) -> date:
    if not raw:
        return today - timedelta(days=DEFAULT_DAYS)
    try:
        if not _DATE.fullmatch(raw):
            raise ValueError(raw)
        since = date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest("'since' must be a date: YYYY-MM-DD.", param="since") from None
    return max(since, today - timedelta(days=KEPT_DAYS - 1))


class Admin:
    """The admin routes, bound to the usage state, the team names and the upstream routes."""

    def __init__(self, state: State, teams: list[str], router: Router) -> None:
        self.state = state
        self.teams = teams
        self.router = router

    async def get_usage(self, request: Request) -> Response:
        team = request.query_params.get("team") or None
        if team is not None and team not in self.teams:
            raise NotFound("No team of that name is configured.", param="team")
        today = datetime.now(UTC).date()
        since = _since(request.query_params.get("since"), today)
        teams = [team] if team is not None else list(self.teams)
        data = await usage.report(self.state.usage, teams, since, today)
        return JSONResponse(
            {"object": "list", "since": since.isoformat(), "until": today.isoformat(), "data": data}
        )

    async def get_upstreams(self, request: Request) -> Response:
        data = [await _describe(route) for route in self.router.routes]
        return JSONResponse({"object": "list", "data": data})

    async def enable_key(self, request: Request) -> Response:
        name = request.path_params["name"]
        route = next((r for r in self.router.routes if r.name == name), None)
        if route is None:
            raise NotFound("No upstream of that name is configured.", param="name")
        fingerprint = request.path_params["fingerprint"]
        if not await route.pool.enable(fingerprint):
            raise NotFound("The upstream has no key with that fingerprint.", param="fingerprint")
        log.info(
            "upstream key enabled by an admin",
            extra={"upstream": route.name, "key_fingerprint": fingerprint},
        )
        return JSONResponse(await _describe(route))


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


async def _describe(route: Route) -> dict[str, Any]:
    now = time.time()
    keys = []
    for key in route.pool.keys:
        state = key.state(now)
        keys.append(
            {
                "fingerprint": key.fingerprint,
                "state": state,
                "in_flight": await route.pool.inflight(key),
                "cooldown_until": _when(key.cooldown_until) if state == "cooling" else None,
                "recheck_at": _when(key.recheck_at) if state == "disabled" else None,
                "last_error": key.last_error,
            }
        )
    down = route.reach.down(now)
    return {
        "name": route.name,
        "kind": route.upstream.kind,
        "priority": route.priority,
        "models": list(route.upstream.settings.models),
        "passed_over_until": _when(route.reach.down_until) if down else None,
        "passed_over_reason": route.reach.reason if down else None,
        "keys": keys,
    }
