"""`GET /v1/images/jobs/{id}` and `GET /v1/images/jobs`: a team reads back its async jobs.

Another team's job answers exactly like an unknown id (404), so ids reveal nothing.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.responses import JSONResponse
from gateway.errors import InvalidRequest, NotFound
from gateway.jobs.record import ID_PREFIX
from gateway.jobs.service import Jobs

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class JobRoutes:
    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs

    async def get_job(self, request: Request) -> Response:
        job_id: str = request.path_params["job_id"]
        record = await self.jobs.get(request.state.team.name, job_id)
        if record is None:
            raise NotFound(f"No job '{job_id[:64]}' exists for your team.", param="job_id")
        request.state.model = record.model
        return JSONResponse(record.public())

    async def list_jobs(self, request: Request) -> Response:
        limit = _limit(request.query_params.get("limit"))
        after = request.query_params.get("after") or None
        if after is not None and not after.startswith(ID_PREFIX):
            raise InvalidRequest("'after' must be a job id (imgjob_…).", param="after")
        records, has_more = await self.jobs.list(request.state.team.name, limit, after)
        return JSONResponse(
            {"object": "list", "data": [r.public() for r in records], "has_more": has_more}
        )


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be an integer from 1 to {MAX_LIMIT}.", param="limit")
    return int(raw)
