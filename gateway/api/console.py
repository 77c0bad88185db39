"""The web console: its page and assets, and the JSON routes it reads.

`/console` and its assets hold no data and need no key. Everything the page shows comes from
JSON routes under the usual guards: `/v1/console/…` with the team's client key (a team only
ever reads its own results and usage), `/admin/…` with the admin key. The page keeps the key
in session storage and sends it only as a bearer token, never in a URL.
"""

from __future__ import annotations

import functools
import math
import time
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
from gateway.errors import InvalidRequest
from gateway.service import Gateway
from gateway.state.base import Counters
from gateway.usage import COUNTS, DAY_FORMAT, MICROS

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


async def page(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    headers = {
        "content-security-policy": _policy(gateway.base_url),
        "cache-control": "no-cache",
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
    }
    return Response(_page_html(), media_type="text/html; charset=utf-8", headers=headers)


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


def _card(gateway: Gateway, image: StoredImage) -> dict[str, Any]:
    meta = image.meta
    return {
        "id": image.id,
        "url": gateway.link(image),
        "created": image.created,
        "model": meta.model,
        "seed": meta.seed,
        "size": image.size,
        "content_type": image.content_type,
        "request_id": meta.request_id,
        "prompt": meta.prompt if gateway.settings.cache.keep_prompts else None,
    }


async def team_images(request: Request) -> Response:
    """The team's results, newest first, a page at a time (`before` = the last `next_before`)."""
    gateway: Gateway = request.app.state.gateway
    before = _cursor(request.query_params.get("before"))
    limit = _integer(request, "limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    images, cursor = await gateway.gallery.page(request.state.team.name, before, limit)
    data = [_card(gateway, image) for image in images]
    return JSONResponse({"object": "list", "data": data, "next_before": cursor})


async def team_usage(request: Request) -> Response:
    """What the team has used of each limit right now (None: no limit)."""
    gateway: Gateway = request.app.state.gateway
    team = request.state.team
    now = time.gmtime()
    names = Counters(team.name, time.strftime(DAY_FORMAT, now), time.strftime("%Y%m", now))
    used = await gateway.state.counters_read(names)
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
                "used": round(used.month_micros / MICROS, 6),
                "limit": team.monthly_budget_usd,
            },
        }
    )


async def usage_series(request: Request) -> Response:
    """Per team, one value a day for the last `days` UTC days (zeros included): for plotting."""
    gateway: Gateway = request.app.state.gateway
    days = _integer(request, "days", DEFAULT_DAYS, 1, KEPT_DAYS)
    today = datetime.now(UTC).date()
    dates = [today - timedelta(days=days - 1 - i) for i in range(days)]
    names = [day.strftime(DAY_FORMAT) for day in dates]
    data = []
    for team in gateway.teams:
        stored = await gateway.state.usage_get(team, names)
        series: dict[str, Any] = {"team": team}
        for count in COUNTS:
            values = [stored.get(name, {}).get(count, 0) for name in names]
            if count == "spend_micros":
                series["spend_usd"] = [round(v / MICROS, 6) for v in values]
            else:
                series[count] = values
        data.append(series)
    return JSONResponse(
        {"object": "list", "days": [day.isoformat() for day in dates], "data": data}
    )


async def recent_errors(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    limit = _integer(request, "limit", ERRORS_SHOWN, 1, gateway.recent_errors.keep)
    return JSONResponse({"object": "list", "data": await gateway.recent_errors.latest(limit)})
