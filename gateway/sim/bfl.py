"""Black Forest Labs' native asynchronous API: submit, poll `get_result`, read credits.

Jobs stay Pending for the configured time, then end Ready (with a signed sample link) or in a
final status; credits are charged at submit and refunded for jobs that do not end Ready.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.sim.bfl_schema import COSTS, KONTEXT_MAX_ACTIVE, SCHEMAS
from gateway.sim.faults import Rejection, answered, submit_rejection
from gateway.sim.inbound import receive, sim_state
from gateway.sim.references import collect
from gateway.sim.render import RenderSpec, input_megapixels, output_size
from gateway.sim.results import result_link
from gateway.sim.state import Job, SimState

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


def _over_capacity(state: SimState, key: str, model: str, now: float) -> bool:
    cap = state.config.max_active_per_key
    if state.active(key, now) >= cap:
        return True
    kontext_cap = min(cap, KONTEXT_MAX_ACTIVE)
    return model == "flux-kontext-max" and state.active(key, now, model) >= kontext_cap


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
    now = time.time()
    state.settle(now)
    if state.balance(key) <= 0:
        return _detail(402, "Insufficient credits")
    if _over_capacity(state, key, model, now):
        return _detail(429, "You have reached the maximum number of active tasks; try again later.")
    return await _create_job(request, state, key, model, params)


async def _create_job(
    request: Request, state: SimState, key: str, model: str, params: dict[str, Any]
) -> JSONResponse:
    references = collect(params, raw_base64=True)
    width, height = await output_size(
        references, params.get("aspect_ratio"), params.get("width"), params.get("height")
    )
    seed = params["seed"] if params["seed"] is not None else random.randrange(2**32)
    outcome = "Request Moderated" if state.moderated(params["prompt"]) else "Ready"
    if outcome == "Ready" and state.faults.bfl_final_status is not None:
        outcome = state.faults.bfl_final_status
    job_id = str(uuid.uuid4())
    if outcome == "Ready":
        spec = RenderSpec(
            model, params["prompt"], seed, width, height, params["output_format"], tuple(references)
        )
        state.store_result(job_id, await state.render(spec))
    now = time.time()
    job = Job(
        id=job_id,
        key=key,
        model=model,
        prompt=params["prompt"],
        seed=seed,
        cost=COSTS[model],
        output_format=params["output_format"],
        outcome=outcome,
        created=now,
        ready_at=now + state.ready_after,
    )
    state.add_job(job)
    return answered(
        state,
        {
            "id": job_id,
            "polling_url": f"{request.base_url}v1/get_result?id={job_id}",
            "cost": job.cost,
            "input_mp": round(await input_megapixels(references), 4),
            "output_mp": round(width * height / 1_000_000, 4),
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
    state.settle(now)
    job = state.jobs.get(job_id)
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
        "sample": result_link(request, state, job.id),
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
    state.settle()
    return JSONResponse({"credits": float(state.balance(request.headers["x-key"]))})


routes = [
    Route("/v1/get_result", get_result, methods=["GET"]),
    Route("/v1/credits", credits, methods=["GET"]),
    Route("/v1/{model}", submit, methods=["POST"]),
]
