"""The last errors the gateway answered, for the operator console.

Kept as a capped list in the state layer, so every worker and replica adds to the one list an
operator reads. Only errors of authenticated requests are listed (the API handlers' errors:
validation, limits, upstream failures); refused keys are not, so no stranger can flush the
list. Entries hold status, code, team, model, route, request id and the error message cut to
300 characters; the gateway's messages name fields and limits, never keys or image data.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.state.records.base import Listings

log = logging.getLogger("gateway.console")

LIST = "recent-errors"
KEEP = 200
MESSAGE_CHARS = 300


class RecentErrors:
    def __init__(self, listings: Listings, keep: int = KEEP) -> None:
        self.listings = listings
        self.keep = keep

    async def record(
        self, error: GatewayError, request_id: str, route: str, team: str | None, model: str | None
    ) -> None:
        """One state call per error answered; an outage loses the entry, not the answer."""
        entry = {
            "time": round(time.time(), 3),
            "status": error.status,
            "type": error.type,
            "code": error.code,
            "team": team,
            "model": model,
            "route": route,
            "request_id": request_id,
            "message": error.message[:MESSAGE_CHARS],
        }
        try:
            await self.listings.list_push(LIST, orjson.dumps(entry), self.keep)
        except GatewayError as exc:
            log.warning("error not listed", extra={"request_id": request_id, "error": str(exc)})

    async def latest(self, limit: int) -> list[dict[str, Any]]:
        return [orjson.loads(item) for item in await self.listings.list_read(LIST, limit)]
