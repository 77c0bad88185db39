"""Black Forest Labs' API for clients (SPEC 4.7): `POST /v1/{model}` and `GET /v1/get_result`.

An app written for api.bfl.ai changes only its base URL: its body is checked through the same
validation and planning as the OpenAI endpoints, admitted against the same team limits, and
run as an async job of the key's team (so it is listed, billed and rehosted like any other).
Every answer of these routes, errors included, is in BFL's shapes (`bfl_shapes`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from gateway import offload, usage
from gateway.api import bfl_shapes
from gateway.api.responses import JSONResponse
from gateway.errors import GatewayError, InvalidRequest, QuotaExceeded, RateLimited
from gateway.jobs.run import JobRun
from gateway.jobs.service import Jobs
from gateway.middleware import NativeRoutes
from gateway.pipeline import ImagePipeline
from gateway.requests import ParsedRequest, decode_json, read_body, validate
from gateway.state.base import State
from gateway.usage import Usage

SUBMIT_PATH = "/v1/{model}"
RESULT_PATH = "/v1/get_result"
NATIVE = NativeRoutes(frozenset({SUBMIT_PATH, RESULT_PATH}), "x-key", bfl_shapes.auth_refusal)
"""The routes that speak BFL's API: the key in `x-key` too, and refusals in BFL's shape."""


class _OnlyRoute(Route):
    """A route that requests of other methods do not match at all: `GET /v1/nothing` stays
    the router's 404 instead of a 405 from the catch-all `POST /v1/{model}`."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        return (Match.NONE, {}) if match is Match.PARTIAL else (match, child)


class BflApi:
    """BFL's two client routes, bound to the pipeline and the jobs service."""

    def __init__(
        self,
        pipeline: ImagePipeline,
        jobs: Jobs,
        state: State,
        max_body_bytes: int,
        base_url: str,
    ) -> None:
        self.pipeline = pipeline
        self.jobs = jobs
        self.state = state
        self.max_body_bytes = max_body_bytes
        self.base_url = base_url

    def routes(self) -> list[Route]:
        """To be registered after every other `/v1/...` route, which must keep winning."""
        return [
            _OnlyRoute(SUBMIT_PATH, self.submit, methods=["POST"]),
            _OnlyRoute(RESULT_PATH, self.get_result, methods=["GET"]),
        ]

    async def submit(self, request: Request) -> Response:
        """Start a job and answer BFL's `{"id", "polling_url"}`; refusals in BFL's shapes.

        A refusal is the request's usage record; a started job records its own when it ends.
        """
        try:
            return await self._submit(request)
        except GatewayError as exc:
            limited = isinstance(exc, RateLimited | QuotaExceeded)
            refused = Usage(error=not limited, rate_limited=limited)
            await usage.record(self.state.usage, request.state.team.name, refused)
            return bfl_shapes.error_response(exc, getattr(request.state, "ratelimit_headers", {}))

    async def _submit(self, request: Request) -> Response:
        pipeline = self.pipeline
        team = request.state.team
        request_id: str = request.state.request_id
        holder = [await read_body(request)]
        model = request.path_params["model"]
        parsed = await offload.run(len(holder[0]), _parse, holder, model, pipeline.links.prefix)
        spec = pipeline.model(parsed.body.model, team)
        request.state.model = spec.id
        candidates = pipeline.plan(parsed, spec)
        candidates = await pipeline.inline_own_links(candidates, parsed.references)
        plan = await pipeline.estimate(spec, candidates)
        ticket = await pipeline.admit(team, request_id, 1, plan)
        request.state.ratelimit_headers = ticket.headers
        run = JobRun(parsed, spec, candidates, plan, ticket, "url")
        record = await self.jobs.submit(
            team=team, request_id=request_id, run=run, webhook_url=None, idempotency_name=None
        )
        polling_url = f"{self.base_url}{RESULT_PATH}?id={record.id}"
        return JSONResponse({"id": record.id, "polling_url": polling_url}, headers=ticket.headers)

    async def get_result(self, request: Request) -> Response:
        """BFL's poll answer for a job of the key's team; `Task not found` for any other id."""
        job_id = request.query_params.get("id")
        if not job_id:
            missing = InvalidRequest(
                "Field required", param="id", code="missing_required_parameter"
            )
            return JSONResponse({"detail": [bfl_shapes.invalid(["query"], missing)]}, 422)
        try:
            record = await self.jobs.get(request.state.team.name, job_id)
        except GatewayError as exc:
            return bfl_shapes.error_response(exc)
        if record is None:
            return bfl_shapes.not_found(job_id)
        request.state.model = record.model
        return JSONResponse(bfl_shapes.poll_body(record))


def _parse(holder: list[bytearray], model: str, own_prefix: str) -> ParsedRequest:
    """A BFL body, decoded and checked in one go (in a worker thread when it is big)."""
    data, known_base64 = decode_json(holder)
    return validate(bfl_shapes.image_fields(model, data), None, own_prefix, known_base64)
