"""The web console: its page and assets, and the JSON routes it reads.

`/console` and its assets hold no data and need no key. Everything the page shows comes from
JSON routes under the usual guards: `/v1/console/…` with the team's client key (a team only
ever reads its own results and usage), `/admin/…` with the admin key. The page keeps the key
in session storage and sends it only as a bearer token, never in a URL.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from gateway.api.admin import KEPT_DAYS
from gateway.api.responses import JSONResponse
from gateway.cache.base import StoredImage
from gateway.console.gallery import Gallery
from gateway.console.recent import RecentErrors
from gateway.errors import InvalidRequest
from gateway.limits import DAY_FORMAT, counters_for
from gateway.links import Links
from gateway.pricing import usd
from gateway.settings import Settings
from gateway.state.base import State
from gateway.usage import COUNTS

PAGE_SIZE = 24
MAX_PAGE_SIZE = 100
DEFAULT_DAYS = 30
ERRORS_SHOWN = 50


@functools.cache
def _page_html() -> bytes:
    return resources.files("gateway.console").joinpath("static/index.html").read_bytes()


def assets() -> StaticFiles:
    """The page's scripts and styles, shipped inside the package."""
    return StaticFiles(packages=[("gateway.console", "static")])


def _policy(base_url: str) -> str:
    """Only this gateway's own scripts, styles and API; images also from the durable links'
    origin, which is `server.public_base_url` and may differ from the page's."""
    parts = urlsplit(base_url)
    images = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src 'self' data: blob: {images}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def _integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}.", param=name)
    return int(raw)


def _cursor(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        before = float(raw)
        if not (math.isfinite(before) and before >= 0):
            raise ValueError(raw)
    except ValueError:
        raise InvalidRequest(
            "'before' must be a unix time, as in next_before.", param="before"
        ) from None
    return before


class Console:
    """The console's page and JSON routes, bound to the gallery, errors, usage and links."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        gallery: Gallery,
        recent: RecentErrors,
        links: Links,
    ) -> None:
        self.state = state
        self.gallery = gallery
        self.recent = recent
        self.links = links
        self.teams = [team.name for team in settings.teams]
        self.keep_prompts = settings.cache.keep_prompts
        self.page_headers = {
            "content-security-policy": _policy(settings.server.base_url),
            "cache-control": "no-cache",
            "referrer-policy": "no-referrer",
            "x-content-type-options": "nosniff",
        }

    async def page(self, request: Request) -> Response:
        return Response(
            _page_html(), media_type="text/html; charset=utf-8", headers=self.page_headers
        )

    def _card(self, image: StoredImage) -> dict[str, Any]:
        meta = image.meta
        return {
            "id": image.id,
            "url": self.links.url(image),
            "created": image.created,
            "model": meta.model,
            "seed": meta.seed,
            "size": image.size,
            "content_type": image.content_type,
            "request_id": meta.request_id,
            "prompt": meta.prompt if self.keep_prompts else None,
        }

    async def team_images(self, request: Request) -> Response:
        """The team's results, newest first, a page at a time (`before` = the last
        `next_before`)."""
        before = _cursor(request.query_params.get("before"))
        limit = _integer(request, "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
        images, cursor = await self.gallery.page(request.state.team.name, before, limit)
        data = [self._card(image) for image in images]
        return JSONResponse({"object": "list", "data": data, "next_before": cursor})

    async def team_usage(self, request: Request) -> Response:
        """What the team has used of each limit right now (None: no limit)."""
        team = request.state.team
        used = await self.state.admission.counters_read(counters_for(team))
        return JSONResponse(
            {
                "team": team.name,
                "models": team.models,
                "requests_this_minute": {
                    "used": used.window_requests,
                    "limit": team.rpm,
                    "resets_in_s": round(used.window_reset_s, 1),
                },
                "in_flight": {"used": used.in_flight, "limit": team.max_concurrency},
                "images_today": {"used": used.day_images, "limit": team.images_per_day},
                "spend_this_month_usd": {
                    "used": usd(used.month_micros),
                    "limit": team.monthly_budget_usd,
                },
            }
        )

    async def usage_series(self, request: Request) -> Response:
        """Per team, one value a day for the last `days` UTC days (zeros included)."""
        days = _integer(request, "days", DEFAULT_DAYS, 1, KEPT_DAYS)
        today = datetime.now(UTC).date()
        dates = [today - timedelta(days=days - 1 - i) for i in range(days)]
        names = [day.strftime(DAY_FORMAT) for day in dates]
        data = []
        for team in self.teams:
            stored = await self.state.usage.usage_get(team, names)
            series: dict[str, Any] = {"team": team}
            for count in COUNTS:
                values = [stored.get(name, {}).get(count, 0) for name in names]
                if count == "spend_micros":
                    series["spend_usd"] = [usd(v) for v in values]
                else:
                    series[count] = values
            data.append(series)
        return JSONResponse(
            {"object": "list", "days": [day.isoformat() for day in dates], "data": data}
        )

    async def recent_errors(self, request: Request) -> Response:
        limit = _integer(request, "limit", ERRORS_SHOWN, 1, self.recent.keep)
        return JSONResponse({"object": "list", "data": await self.recent.latest(limit)})
