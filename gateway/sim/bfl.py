"""Black Forest Labs' native asynchronous API: submit, poll `get_result`, read credits.

Jobs stay Pending for the configured time, then end Ready (with a signed sample link) or in a
final status. The submit answer reports `cost` (credits, by BFL's list prices in `prices`) and
`input_mp`/`output_mp`; that cost is charged to the key's account at submit and refunded for jobs
that do not end Ready. `polling_url` names `poll_host`, as BFL's name regional hosts; sample
links stay on the submit host, as BFL's live on delivery hosts whichever host was polled.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.sim.bfl_schema import SCHEMAS
from gateway.sim.faults import Rejection, answered, submit_rejection
from gateway.sim.inbound import receive, sim_state
from gateway.sim.ledger import Job
from gateway.sim.prices import cost_credits, reported_megapixels
from gateway.sim.references import Reference, collect
from gateway.sim.render import RenderSpec
from gateway.sim.results import result_link
from gateway.sim.sizes import Size, output_size, reference_sizes
from gateway.sim.state import SimState

NOT_AUTHENTICATED = "Not authenticated - Invalid Authentication"


def _detail(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status, headers)


def _auth_failure(request: Request, state: SimState) -> JSONResponse | None:
    key = request.headers.get("x-key")
    if key is None:
        return _detail(401, NOT_AUTHENTICATED)
    if not state.key_ok(key):
        return _detail(403, NOT_AUTHENTICATED)
    return None


def _rejected(rejection: Rejection) -> JSONResponse:
    messages = {
        "rate_limited": "Rate limit exceeded",
        "no_credit": "Insufficient credits",
        "hang": "Gateway Timeout",
    }
    detail = messages.get(rejection.reason, "Simulated upstream failure")
    return _detail(rejection.status, detail, rejection.headers())


def _polling_url(request: Request, state: SimState, job_id: str) -> str:
    """On `poll_host` (same scheme and port as the submit) when set, like BFL's regional hosts."""
    base, host = str(request.base_url), state.config.poll_host
    if host:
        name = f"[{host}]" if ":" in host else host
        port = request.url.port
        base = f"{request.url.scheme}://{name if port is None else f'{name}:{port}'}/"
    return f"{base}v1/get_result?id={job_id}"


@dataclass(frozen=True, slots=True)
class Order:
    """A validated submit with its references' sizes, read before anything is booked."""

    key: str
    model: str
    params: dict[str, Any]
    references: list[Reference]
    sizes: list[Size | None]


async def submit(request: Request) -> JSONResponse:
    state, model = sim_state(request), request.path_params["model"]
    inbound = await receive(request)
    if model not in SCHEMAS:
        return _detail(404, "Not Found")
    state.submits += 1
    failure = _auth_failure(request, state)
    if failure is not None:
        return failure
    key = request.headers["x-key"]
    rejection = await submit_rejection(request, state, key)
    if rejection is not None:
        return _rejected(rejection)
    body = inbound.object()
    if body is None:
        invalid_json = {"loc": ["body"], "msg": "JSON object required", "type": "json_invalid"}
        return _detail(422, [invalid_json])
    try:
        params = SCHEMAS[model].model_validate(body).model_dump()
    except ValidationError as invalid:
        errors = invalid.errors(include_url=False)
        detail = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors]
        return _detail(422, detail)
    references = collect(params, raw_base64=True)
    sizes = await reference_sizes(references)
    return await _book(request, state, Order(key, model, params, references, sizes))


def _job(request: Request, state: SimState, order: Order, output: Size) -> Job:
    params = order.params
    seed = params["seed"] if params["seed"] is not None else random.randrange(2**32)
    outcome = "Request Moderated" if state.moderated(params["prompt"]) else "Ready"
    if outcome == "Ready" and state.faults.bfl_final_status is not None:
        outcome = state.faults.bfl_final_status
    cost = state.faults.bfl_cost
    now = time.time()
    return Job(
        id=str(uuid.uuid4()),
        key=order.key,
        model=order.model,
        prompt=params["prompt"],
        seed=seed,
        cost=cost_credits(order.model, output, order.sizes) if cost is None else cost,
        output_format=params["output_format"],
        outcome=outcome,
        created=now,
        ready_at=now + state.ready_after,
        origin=str(request.base_url),
        account=state.ledger.account(order.key),
    )


async def _book(request: Request, state: SimState, order: Order) -> JSONResponse:
    """Build, admit and render the job; from `_job` to `admit` nothing awaits, so the
    account's cap holds however many submits arrive at once."""
    params = order.params
    output = output_size(
        order.sizes, params.get("aspect_ratio"), params.get("width"), params.get("height")
    )
    job = _job(request, state, order, output)
    refusal = state.ledger.admit(job)
    if refusal == "no_credit":
        return _detail(402, "Insufficient credits")
    if refusal == "busy":
        return _detail(429, "You have reached the maximum number of active tasks; try again later.")
    if job.outcome == "Ready":
        spec = RenderSpec(
            job.model, job.prompt, job.seed, *output, job.output_format, tuple(order.references)
        )
        state.store_result(job.id, await state.render(spec))
    return answered(
        state,
        {
            "id": job.id,
            "polling_url": _polling_url(request, state, job.id),
            "cost": job.cost,
            "input_mp": reported_megapixels(order.sizes),
            "output_mp": reported_megapixels([output]),
        },
    )


def _poll_body(job_id: str, status: str, **fields: Any) -> dict[str, Any]:
    body = {"id": job_id, "status": status, "result": None, "progress": None}
    return body | {"details": None, "preview": None} | fields


async def get_result(request: Request) -> JSONResponse:
    state = sim_state(request)
    await receive(request)
    failure = _auth_failure(request, state)
    if failure is not None:
        return failure
    job_id = request.query_params.get("id")
    if not job_id:
        return _detail(422, [{"loc": ["query", "id"], "msg": "Field required", "type": "missing"}])
    now = time.time()
    state.ledger.settle(now)
    job = state.ledger.jobs.get(job_id)
    if job is None or job.key != request.headers["x-key"] or job.outcome == "Task not found":
        return JSONResponse(_poll_body(job_id, "Task not found"), 404)
    if job.active(now):
        progress = round((now - job.created) / max(job.ready_at - job.created, 1e-6), 3)
        return JSONResponse(_poll_body(job.id, "Pending", progress=progress))
    if job.outcome != "Ready":
        moderated = "Moderated" in job.outcome
        details = {"Moderation Reasons": ["sim"]} if moderated else {"error": "simulated"}
        return JSONResponse(_poll_body(job.id, job.outcome, details=details))
    result = {
        "sample": result_link(request, state, job.id, origin=job.origin),
        "prompt": job.prompt,
        "seed": job.seed,
        "start_time": job.created,
        "end_time": job.ready_at,
        "duration": job.ready_at - job.created,
    }
    return JSONResponse(_poll_body(job.id, "Ready", result=result))


async def credits(request: Request) -> JSONResponse:
    state = sim_state(request)
    await receive(request)
    failure = _auth_failure(request, state)
    if failure is not None:
        return failure
    state.ledger.settle()
    return JSONResponse({"credits": float(state.balance(request.headers["x-key"]))})


routes = [
    Route("/v1/get_result", get_result, methods=["GET"]),
    Route("/v1/credits", credits, methods=["GET"]),
    Route("/v1/{model}", submit, methods=["POST"]),
]
