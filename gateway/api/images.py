"""`POST /v1/images/generations` and `POST /v1/images/edits`: one handler, two routes.

The flow is one way: parse and validate → plan (which upstreams can honour it) → idempotency
→ team admission → run → settle → answer. Whatever the outcome, the request ends with one
usage record for its team. With `Prefer: respond-async` (SPEC 4.6) everything up to admission
happens here, as for a synchronous request, and the run goes to `Jobs`: the answer is a 202
with the job, and the job records the request's usage when it ends.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway import usage
from gateway.answer import image_body
from gateway.api.responses import JSONResponse
from gateway.errors import InvalidRequest, QuotaExceeded, RateLimited
from gateway.idempotency import Idempotency, body_hash
from gateway.jobs.record import JobRecord
from gateway.jobs.run import JobRun
from gateway.jobs.service import Jobs
from gateway.metrics import Metrics
from gateway.pipeline import Delivered, ImagePipeline
from gateway.requests import parse
from gateway.settings import JobsSettings
from gateway.state.base import State
from gateway.usage import Usage
from gateway.webhooks.rules import resolve_check

REPLAY_HEADER = "x-idempotent-replay"
IGNORED_HEADER = "x-gateway-ignored"
RESPOND_ASYNC = "respond-async"


def prefers_async(request: Request) -> bool:
    """Whether a `Prefer` header (RFC 7240: `respond-async, wait=5`) asks not to wait."""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            if preference.split(";")[0].split("=")[0].strip().lower() == RESPOND_ASYNC:
                return True
    return False


def accepted(record: JobRecord, headers: dict[str, str]) -> JSONResponse:
    """The 202 of an async request: where to poll, and the job as it is now."""
    return JSONResponse(
        record.public(),
        status_code=202,
        headers={
            **headers,
            "location": f"/v1/images/jobs/{record.id}",
            "preference-applied": RESPOND_ASYNC,
        },
    )


class CreateImage:
    """The image routes, bound to the pipeline and the parts around it."""

    def __init__(
        self,
        pipeline: ImagePipeline,
        idempotency: Idempotency,
        state: State,
        metrics: Metrics,
        max_body_bytes: int,
        jobs: Jobs,
        jobs_settings: JobsSettings,
    ) -> None:
        self.pipeline = pipeline
        self.idempotency = idempotency
        self.state = state
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.jobs = jobs
        self.jobs_settings = jobs_settings

    async def create_image(self, request: Request) -> Response:
        used = Usage()
        try:
            return await self._create_image(request, used)
        except (RateLimited, QuotaExceeded):
            used.rate_limited = True
            raise
        except BaseException:
            used.error = True
            raise
        finally:
            if not getattr(request.state, "job_submitted", False):
                await usage.record(self.state.usage, request.state.team.name, used)

    async def _create_image(self, request: Request, used: Usage) -> Response:
        pipeline = self.pipeline
        team = request.state.team
        request_id: str = request.state.request_id
        parsed = await parse(request, self.max_body_bytes, pipeline.links.prefix)
        respond_async = prefers_async(request)
        webhook_url = parsed.body.webhook_url
        if webhook_url is not None:
            if not respond_async:
                raise InvalidRequest(
                    "webhook_url is only taken with the header 'Prefer: respond-async'.",
                    param="webhook_url",
                )
            await resolve_check(team, webhook_url, self.jobs_settings)
        spec = pipeline.model(parsed.body.model, team)
        request.state.model = spec.id
        candidates = pipeline.plan(parsed, spec)

        idem_key = request.headers.get("idempotency-key")
        idem_name = self.idempotency.name(team.name, idem_key) if idem_key is not None else None
        if idem_name is not None:
            replay = await self.idempotency.begin(idem_name, await body_hash(parsed))
            if replay is not None:
                job = await self.jobs.replayed(team.name, replay.body)
                if job is not None:
                    return accepted(job, {REPLAY_HEADER: "true"})
                return JSONResponse(replay.body, headers={**replay.headers, REPLAY_HEADER: "true"})
        try:
            candidates = await pipeline.inline_own_links(candidates, parsed.references)
            plan = await pipeline.estimate(spec, candidates)
            ticket = await pipeline.admit(team, request_id, parsed.body.n, plan)
            request.state.ratelimit_headers = ticket.headers
            response_format = parsed.body.response_format or team.default_response_format
            if respond_async:
                run = JobRun(parsed, spec, candidates, plan, ticket, response_format)
                record = await self.jobs.submit(
                    team=team,
                    request_id=request_id,
                    run=run,
                    webhook_url=webhook_url,
                    idempotency_name=idem_name,
                )
                request.state.job_submitted = True
                return accepted(record, ticket.headers)
            delivered: list[Delivered] = []
            self.metrics.inflight.labels(team=team.name).inc()
            try:
                delivered = await pipeline.generate(parsed, spec, candidates, team, request_id)
            finally:
                self.metrics.inflight.labels(team=team.name).dec()
                used.spend_micros = await pipeline.settle(ticket, spec, plan, delivered)
            used.images = len(delivered)
            body = await image_body(pipeline, delivered, response_format)
        except BaseException:
            if idem_name is not None:
                await self.idempotency.drop(idem_name)
            raise
        upstreams = ",".join(dict.fromkeys(d.outcome.upstream for d in delivered))
        request.state.upstream = upstreams
        request.state.key_fingerprint = ",".join(
            dict.fromkeys(d.outcome.key_fingerprint for d in delivered)
        )
        request.state.upstream_seconds = max(d.outcome.upstream_seconds for d in delivered)
        request.state.rehost_seconds = max(d.rehost_seconds for d in delivered)
        request.state.images = len(delivered)
        headers = {"x-gateway-upstream": upstreams, **ticket.headers}
        ignored = parsed.body.ignored()
        if ignored:
            headers[IGNORED_HEADER] = ",".join(ignored)
        if idem_name is not None:
            await self.idempotency.finish(idem_name, body, headers, [d.image for d in delivered])
        return JSONResponse(body, headers=headers)
