"""The OpenAI-style FLUX aggregator route (APIYI-like): one synchronous call, one image URL.

It accepts exactly the fields the real aggregator takes, so a gateway that leaks `n`,
`size` or `response_format` upstream fails its tests here.

Like the one-api/new-api stacks such aggregators run on, it answers 403 for key problems as
well as for moderation (`content_policy_violation`). Marks in a key's name (the key must still
be accepted by `keys`) choose its problem:

- `sk-quota-…` starts with no quota (`ledger.NO_QUOTA_PREFIX`): one-api's 403
  `insufficient_user_quota` until `POST /_sim/credits` gives its account credits > 0.
  Credits 0 cut any key off the same way (a BFL submit then answers 402).
- `sk-noperm-…` may use no model: new-api's 403 "该令牌无权使用模型 <model>".

The balance is only read here, never charged: the aggregator reports no cost.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.sim.faults import Rejection, answered, submit_rejection
from gateway.sim.inbound import bearer_key, receive, sim_state
from gateway.sim.references import Reference, image_fields, parse_reference
from gateway.sim.render import RenderSpec
from gateway.sim.results import result_link
from gateway.sim.sizes import output_size, parse_ratio, reference_sizes

MODELS = {
    "flux-2-pro": 8,
    "flux-2-max": 8,
    "flux-2-flex": 8,
    "flux-2-klein-9b": 4,
    "flux-2-klein-4b": 4,
    "flux-kontext-pro": 1,
    "flux-kontext-max": 1,
}
FLEX_ONLY = ("steps", "guidance")
ALLOWED = {
    "model",
    "prompt",
    *image_fields(),
    "aspect_ratio",
    "seed",
    "safety_tolerance",
    "output_format",
    "prompt_upsampling",
    *FLEX_ONLY,
}
KONTEXT_RATIO = (9 / 21, 21 / 9)
NO_PERMISSION_PREFIX = "sk-noperm-"


class Invalid(ValueError):
    def __init__(self, message: str, param: str | None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def error(
    status: int,
    message: str,
    kind: str,
    code: str | None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status, headers)


def _rejected(rejection: Rejection) -> JSONResponse:
    headers = rejection.headers()
    if rejection.reason == "rate_limited":
        return error(429, "rate limited", "rate_limit_error", "rate_limit_exceeded", None, headers)
    if rejection.reason == "no_credit":
        message = "You exceeded your current quota, please check your balance."
        return error(429, message, "insufficient_quota", "insufficient_quota")
    return error(rejection.status, "simulated upstream failure", "server_error", None)


def _number(body: dict[str, object], name: str, low: float, high: float, integer: bool) -> None:
    value = body.get(name)
    if value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        raise Invalid(f"'{name}' must be a number between {low:g} and {high:g}", name)


def _check_fields(body: dict[str, object], model: str) -> None:
    for name in FLEX_ONLY:
        if model != "flux-2-flex" and body.get(name) is not None:
            message = f"'{name}' is only supported by flux-2-flex"
            raise Invalid(message, name, "unsupported_parameter")
    _number(body, "seed", 0, 2**63 - 1, integer=True)
    _number(body, "safety_tolerance", 0, 6, integer=True)
    _number(body, "steps", 1, 50, integer=True)
    _number(body, "guidance", 1.5, 10, integer=False)
    if body.get("output_format") not in (None, "jpeg", "png"):
        raise Invalid("'output_format' must be 'jpeg' or 'png'", "output_format")
    if not isinstance(body.get("prompt_upsampling", False), bool):
        raise Invalid("'prompt_upsampling' must be a boolean", "prompt_upsampling")
    ratio_text = body.get("aspect_ratio")
    if ratio_text is not None:
        ratio = parse_ratio(ratio_text) if isinstance(ratio_text, str) else None
        if ratio is None:
            raise Invalid("'aspect_ratio' must look like '16:9'", "aspect_ratio")
        if model.startswith("flux-kontext") and not (
            KONTEXT_RATIO[0] <= ratio[0] / ratio[1] <= KONTEXT_RATIO[1]
        ):
            raise Invalid("'aspect_ratio' must be between 21:9 and 9:21", "aspect_ratio")


def _references(body: dict[str, object], model: str) -> list[Reference]:
    references = []
    for index, name in enumerate(image_fields(), start=1):
        if body.get(name) is None:
            continue
        if index > MODELS[model]:
            raise Invalid(f"{model} takes at most {MODELS[model]} reference images", name)
        try:
            references.append(parse_reference(body[name]))
        except ValueError as problem:
            raise Invalid(f"'{name}' {problem}", name) from problem
    return references


def validate(body: dict[str, object]) -> list[Reference]:
    """The body's references, or Invalid naming the first bad field."""
    unknown = next((name for name in body if name not in ALLOWED), None)
    if unknown is not None:
        message = f"Unrecognized request argument supplied: {unknown}"
        raise Invalid(message, unknown, "unknown_parameter")
    model, prompt = body.get("model"), body.get("prompt")
    if model is None:
        raise Invalid("'model' is required", "model", "missing_required_parameter")
    if not isinstance(model, str) or model not in MODELS:
        raise Invalid(f"The model '{model}' does not exist", "model", "model_not_found")
    if not isinstance(prompt, str) or not prompt.strip():
        raise Invalid("'prompt' is required", "prompt", "missing_required_parameter")
    _check_fields(body, model)
    return _references(body, model)


async def generations(request: Request) -> JSONResponse:
    state = sim_state(request)
    inbound = await receive(request)
    state.submits += 1
    key = bearer_key(request)
    if key is None or not state.key_ok(key):
        message = "Incorrect API key provided."
        return error(401, message, "authentication_error", "invalid_api_key")
    body = inbound.object()
    model = body.get("model") if body is not None else None
    if key.startswith(NO_PERMISSION_PREFIX) and isinstance(model, str):
        return error(403, f"该令牌无权使用模型 {model}", "new_api_error", None)
    rejection = await submit_rejection(request, state, key)
    if rejection is not None:
        return _rejected(rejection)
    if body is None:
        message = "The body must be a JSON object."
        return error(400, message, "invalid_request_error", "invalid_json")
    try:
        references = validate(body)
    except Invalid as problem:
        return error(400, str(problem), "invalid_request_error", problem.code, problem.param)
    if state.balance(key) <= 0:
        message = "user quota is not enough"
        return error(403, message, "one_api_error", "insufficient_user_quota")
    await asyncio.sleep(state.latency)
    if state.moderated(str(body["prompt"])):
        message = "Your request was rejected by the safety system."
        return error(403, message, "invalid_request_error", "content_policy_violation")
    return await _generate(request, body, references)


async def _generate(
    request: Request, body: dict[str, object], references: list[Reference]
) -> JSONResponse:
    state = sim_state(request)
    output_format = str(body.get("output_format") or "jpeg")
    aspect_ratio = body.get("aspect_ratio")
    ratio = aspect_ratio if isinstance(aspect_ratio, str) else None
    width, height = output_size(await reference_sizes(references), ratio)
    seed = body.get("seed")
    spec = RenderSpec(
        model=str(body["model"]),
        prompt=str(body["prompt"]),
        seed=seed if isinstance(seed, int) else random.randrange(2**32),
        width=width,
        height=height,
        output_format=output_format,
        references=tuple(references),
    )
    result_id = uuid.uuid4().hex
    state.store_result(result_id, await state.render(spec))
    url = result_link(request, state, result_id)
    return answered(state, {"created": int(time.time()), "data": [{"url": url}]})


routes = [Route("/v1/images/generations", generations, methods=["POST"])]
