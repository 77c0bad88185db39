"""Black Forest Labs' API for clients (SPEC 4.7): BFL's bodies, statuses and error shapes,
and a client written from BFL's docs that works against the gateway by its base URL alone."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.api import bfl_shapes
from gateway.errors import (
    ContentPolicyViolation,
    InvalidRequest,
    PermissionDenied,
    QuotaExceeded,
    RateLimited,
    UnknownParameter,
    UpstreamError,
)
from gateway.jobs.record import JobRecord, Settlement
from gateway.requests import validate
from tests import bfl_client
from tests.conftest import (
    CLIENT_KEY,
    LIMITED_KEY,
    Gateway,
    GatewayFactory,
    Launch,
    gateway_settings,
    sim_upstream,
)
from tests.helpers import Sim, image_bytes

PNG = image_bytes("PNG", (250, 0, 0))
WEBP = image_bytes("WEBP", (0, 0, 250))
OTHER_KEY = "sk-test-other-0123456789"
BROKE_KEY = "sk-test-broke-0123456789"
SLOW_KEY = "sk-test-slow-0123456789"
NOT_AUTHENTICATED = {"detail": "Not authenticated: send your key as 'x-key: <key>'."}
WRONG_KEY = {"detail": "Incorrect API key provided."}


def bare(data: bytes) -> str:
    return base64.b64encode(data).decode()


def detail(status: int, body: dict[str, Any]) -> tuple[int, Any]:
    return status, body["detail"]


# --- shapes, on their own -------------------------------------------------------------------


def test_a_bfl_body_becomes_the_fields_of_an_image_request() -> None:
    body = {"prompt": "a fox", "width": 1024, "height": 768, "seed": 7, "input_image": None}
    fields = bfl_shapes.image_fields("flux-2-pro", body)
    assert fields == {**body, "model": "flux-2-pro", "response_format": "url"}
    assert validate(fields).body.width == 1024


@pytest.mark.parametrize(("data", "content_type"), [(PNG, "image/png"), (WEBP, "image/webp")])
def test_bare_base64_references_become_data_urls_of_their_sniffed_type(
    data: bytes, content_type: str
) -> None:
    fields = bfl_shapes.image_fields("flux-2-pro", {"prompt": "x", "input_image_2": bare(data)})
    assert fields["input_image_2"] == f"data:{content_type};base64,{bare(data)}"
    (reference,) = validate(fields).references
    assert reference.param == "input_image_2"


def test_urls_and_data_urls_are_left_as_given() -> None:
    given = {
        "prompt": "x",
        "input_image": "https://example.com/a.png",
        "input_image_2": f"data:image/png;base64,{bare(PNG)}",
    }
    fields = bfl_shapes.image_fields("flux-2-pro", given)
    assert (fields["input_image"], fields["input_image_2"]) == (
        given["input_image"],
        given["input_image_2"],
    )


@pytest.mark.parametrize(
    ("value", "param"),
    [
        (bare(b"GIF89a" + bytes(32)), "input_image"),
        ("not base64 at all!", "input_image"),
    ],
)
def test_base64_that_is_not_an_image_names_its_field(value: str, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        bfl_shapes.image_fields("flux-2-pro", {"prompt": "x", param: value})
    assert refused.value.param == param


def test_base64_whose_tail_is_broken_is_refused_by_the_data_url_check() -> None:
    fields = bfl_shapes.image_fields("flux-2-pro", {"prompt": "x", "input_image": bare(PNG) + "!"})
    with pytest.raises(InvalidRequest) as refused:
        validate(fields)
    assert refused.value.param == "input_image"


@pytest.mark.parametrize("name", ["n", "size", "response_format", "model", "promt"])
def test_fields_bfl_does_not_take_are_unknown(name: str) -> None:
    with pytest.raises(UnknownParameter) as refused:
        bfl_shapes.image_fields("flux-2-pro", {"prompt": "x", name: "1"})
    assert (refused.value.param, refused.value.message) == (name, f"Unknown field '{name}'.")


@pytest.mark.parametrize("name", ["webhook_url", "webhook_secret"])
def test_bfl_webhooks_are_refused_with_the_way_to_get_signed_ones(name: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        bfl_shapes.image_fields("flux-2-pro", {"prompt": "x", name: "https://hooks.example"})
    assert (refused.value.param, refused.value.code) == (name, "unsupported_parameter")
    assert "Prefer: respond-async" in refused.value.message


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidRequest) as refused:
        bfl_shapes.image_fields("flux-2-pro", ["prompt"])
    assert refused.value.code == "invalid_json"


def answer(response: Any) -> tuple[int, Any, dict[str, str]]:
    return response.status_code, orjson.loads(response.body), dict(response.headers)


@pytest.mark.parametrize(
    ("error", "loc", "kind"),
    [
        (InvalidRequest("Invalid value", param="steps"), ["body", "steps"], "value_error"),
        (UnknownParameter("Unknown field 'x'.", param="x"), ["body", "x"], "extra_forbidden"),
        (
            InvalidRequest("Missing", param="prompt", code="missing_required_parameter"),
            ["body", "prompt"],
            "missing",
        ),
        (InvalidRequest("Not JSON", code="invalid_json"), ["body"], "json_invalid"),
    ],
)
def test_bad_input_is_a_422_detail_list_at_its_field(
    error: InvalidRequest, loc: list[str], kind: str
) -> None:
    status, body, _ = answer(bfl_shapes.error_response(error))
    assert (status, body) == (422, {"detail": [{"loc": loc, "msg": error.message, "type": kind}]})


def test_quota_is_402_rate_limits_429_and_other_errors_keep_their_status() -> None:
    quota = QuotaExceeded("Monthly budget exhausted.")
    assert answer(bfl_shapes.error_response(quota))[:2] == (
        402,
        {"detail": "Monthly budget exhausted."},
    )
    limited = RateLimited("Slow down.", headers={"retry-after": "12"})
    status, body, headers = answer(bfl_shapes.error_response(limited))
    assert (status, body, headers["retry-after"]) == (429, {"detail": "Slow down."}, "12")
    denied = PermissionDenied("Your team may not use the model 'flux-2-max'.", param="model")
    assert answer(bfl_shapes.error_response(denied))[:2] == (403, {"detail": denied.message})


def record(status: str, **fields: Any) -> JobRecord:
    job = JobRecord(
        id="imgjob_1", team="design", model="flux-2-pro", request_id="req_1", created=10
    )
    job.status = status  # type: ignore[assignment]
    job.settlement = Settlement(("a", "b", "c"), "memory", 1, 1, 1, 0, "url", 1, None, "a fox")
    for name, value in fields.items():
        setattr(job, name, value)
    return job


POLL_KEYS = {"id": "imgjob_1", "result": None, "progress": None, "details": None, "preview": None}


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_job_not_ended_is_pending(status: str) -> None:
    assert bfl_shapes.poll_body(record(status)) == {**POLL_KEYS, "status": "Pending"}


def test_a_succeeded_job_is_ready_with_its_durable_link_seed_and_prompt() -> None:
    result = {"created": 12, "data": [{"url": "http://gw/images/a.png", "seed": 5}]}
    job = record("succeeded", result=result, ended_at=12.5)
    ready = {"sample": "http://gw/images/a.png", "seed": 5, "prompt": "a fox"}
    times = {"start_time": 10, "end_time": 12.5, "duration": 2.5}
    assert bfl_shapes.poll_body(job) == {**POLL_KEYS, "status": "Ready", "result": ready | times}


def test_moderation_is_request_moderated_and_other_failures_are_errors() -> None:
    moderated = record("failed")
    moderated.fail(ContentPolicyViolation("Moderated."), 11.0)
    body = bfl_shapes.poll_body(moderated)
    assert (body["status"], body["details"]["code"]) == (
        "Request Moderated",
        "content_policy_violation",
    )
    failed = record("failed")
    failed.fail(UpstreamError("The upstream failed."), 11.0)
    details = {**UpstreamError("The upstream failed.").body()["error"], "status": 502}
    assert bfl_shapes.poll_body(failed) == {**POLL_KEYS, "status": "Error", "details": details}


# --- against the gateway, with the simulator behind it ----------------------------------------


TEAMS = [
    {"name": "design", "keys": [CLIENT_KEY]},
    {"name": "limited", "keys": [LIMITED_KEY], "models": ["flux-2-pro"]},
    {"name": "other", "keys": [OTHER_KEY]},
    {"name": "broke", "keys": [BROKE_KEY], "monthly_budget_usd": 0.01},
    {"name": "slow", "keys": [SLOW_KEY], "rpm": 1},
]


@pytest.fixture
def gw(launch: Launch, sim: Sim, tmp_path: Path) -> Gateway:
    """A gateway on each state backend with a BFL upstream on the simulator."""
    settings = gateway_settings(
        sim,
        tmp_path / "cache",
        upstreams=[sim_upstream(sim, "bfl", "bfl")],
        teams=TEAMS,
        aliases={"flux-pro-1.1": "flux-2-pro"},
    )
    return launch(settings)


def submit(gw: Gateway, model: str, body: object, key: str = CLIENT_KEY) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/{model}", headers={"x-key": key}, json=body, timeout=30)


def get_result(gw: Gateway, job_id: str, key: str = CLIENT_KEY) -> httpx.Response:
    return httpx.get(f"{gw.url}/v1/get_result", params={"id": job_id}, headers={"x-key": key})


def sim_bytes(sim: Sim) -> bytes:
    (result,) = sim.results()
    return httpx.get(f"{sim.url}/_sim/results/{result['id']}").content


def test_the_bfl_docs_client_gets_the_simulators_image_through_the_gateway(
    gw: Gateway, sim: Sim
) -> None:
    sim.faults(bfl_ready_after=0.7)
    body = {"prompt": "a red fox", "width": 1024, "height": 768, "seed": 42}
    made = bfl_client.generate(gw.url, CLIENT_KEY, "flux-2-pro", body)
    job_id = made.task["id"]
    assert made.task == {"id": job_id, "polling_url": f"{gw.url}/v1/get_result?id={job_id}"}
    assert job_id.startswith("imgjob_")
    sample = made.result["result"]["sample"]
    assert sample.startswith(f"{gw.url}/images/")
    assert (made.result["status"], made.result["result"]["seed"]) == ("Ready", 42)
    assert made.result["result"]["prompt"] == "a red fox"
    assert made.image == sim_bytes(sim)
    (upstream_submit,) = [r for r in sim.requests() if r["method"] == "POST"]
    assert upstream_submit["json"] == body


def test_a_pending_job_answers_pending_and_is_listed_with_the_teams_jobs(
    gw: Gateway, sim: Sim
) -> None:
    sim.faults(bfl_ready_after=30)
    job_id = submit(gw, "flux-2-pro", {"prompt": "slow"}).json()["id"]
    pending = get_result(gw, job_id)
    assert (pending.status_code, pending.json()) == (
        200,
        {**POLL_KEYS, "id": job_id, "status": "Pending"},
    )
    listed = httpx.get(
        f"{gw.url}/v1/images/jobs", headers={"authorization": f"Bearer {CLIENT_KEY}"}
    ).json()
    assert [job["id"] for job in listed["data"]] == [job_id]
    assert listed["data"][0]["model"] == "flux-2-pro"


@pytest.mark.parametrize(
    ("kind", "sent"),
    [("openai-images", f"data:image/png;base64,{bare(PNG)}"), ("bfl", bare(PNG))],
)
def test_bare_base64_references_reach_either_upstream_kind_in_its_own_form(
    fresh_gateway: GatewayFactory, sim: Sim, kind: str, sent: str
) -> None:
    gw = fresh_gateway(upstreams=[sim_upstream(sim, "up", kind)])
    made = bfl_client.generate(
        gw.url, CLIENT_KEY, "flux-kontext-pro", {"prompt": "edit", "input_image": bare(PNG)}
    )
    assert made.image == sim_bytes(sim)
    (upstream_submit,) = [r for r in sim.requests() if r["method"] == "POST"]
    assert upstream_submit["json"]["input_image"] == sent


def test_an_alias_names_the_model_and_bearer_keys_work_too(gw: Gateway, sim: Sim) -> None:
    answer = httpx.post(
        f"{gw.url}/v1/flux-pro-1.1",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
        json={"prompt": "x"},
    )
    assert answer.status_code == 200
    assert set(answer.json()) == {"id", "polling_url"}
    job = httpx.get(
        f"{gw.url}/v1/images/jobs/{answer.json()['id']}",
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    ).json()
    assert job["model"] == "flux-2-pro"


@pytest.mark.parametrize(
    ("model", "body", "loc", "kind"),
    [
        ("flux-2-pro", {"prompt": "x", "promt": "y"}, ["body", "promt"], "extra_forbidden"),
        ("flux-2-pro", {"width": 1024}, ["body", "prompt"], "missing"),
        ("flux-2-pro", {"prompt": "x", "steps": 20}, ["body", "steps"], "value_error"),
        (
            "flux-2-klein-4b",
            {
                "prompt": "x",
                "input_image": bare(PNG),
                **{f"input_image_{i}": bare(PNG) for i in range(2, 6)},
            },
            ["body", "input_image_5"],
            "value_error",
        ),
        (
            "flux-2-pro",
            {"prompt": "x", "input_image": "nope"},
            ["body", "input_image"],
            "value_error",
        ),
        ("flux-2-pro", {"prompt": "x", "seed": -1}, ["body", "seed"], "value_error"),
    ],
)
def test_bad_input_is_a_422_at_its_field_before_any_upstream_call(
    gw: Gateway, sim: Sim, model: str, body: dict[str, Any], loc: list[str], kind: str
) -> None:
    answer = submit(gw, model, body)
    assert answer.status_code == 422
    (entry,) = answer.json()["detail"]
    assert (entry["loc"], entry["type"]) == (loc, kind)
    assert isinstance(entry["msg"], str) and entry["msg"]
    assert sim.requests() == []


def test_a_body_that_is_not_json_is_a_422(gw: Gateway, sim: Sim) -> None:
    answer = httpx.post(
        f"{gw.url}/v1/flux-2-pro", headers={"x-key": CLIENT_KEY}, content=b"{prompt"
    )
    assert (answer.status_code, answer.json()) == (
        422,
        {
            "detail": [
                {"loc": ["body"], "msg": "The body is not valid JSON.", "type": "json_invalid"}
            ]
        },
    )


def test_unknown_models_are_404_and_models_of_other_teams_403(gw: Gateway, sim: Sim) -> None:
    unknown = submit(gw, "flux-9", {"prompt": "x"})
    assert (unknown.status_code, unknown.json()) == (
        404,
        {"detail": "The model 'flux-9' does not exist."},
    )
    denied = submit(gw, "flux-2-max", {"prompt": "x"}, key=LIMITED_KEY)
    assert (denied.status_code, denied.json()) == (
        403,
        {"detail": "Your team may not use the model 'flux-2-max'."},
    )
    assert sim.requests() == []


def test_keys_are_refused_in_bfls_shape(gw: Gateway, sim: Sim) -> None:
    missing = httpx.post(f"{gw.url}/v1/flux-2-pro", json={"prompt": "x"})
    assert (missing.status_code, missing.json()) == (401, NOT_AUTHENTICATED)
    wrong = submit(gw, "flux-2-pro", {"prompt": "x"}, key="sk-wrong")
    assert (wrong.status_code, wrong.json()) == (403, WRONG_KEY)
    poll = get_result(gw, "imgjob_x", key="sk-wrong")
    assert (poll.status_code, poll.json()) == (403, WRONG_KEY)
    openai_route = httpx.get(f"{gw.url}/v1/models", headers={"x-key": CLIENT_KEY})
    assert openai_route.status_code == 401
    assert openai_route.json()["error"]["code"] == "invalid_api_key"
    assert sim.requests() == []


def test_an_exhausted_budget_is_402(gw: Gateway, sim: Sim) -> None:
    answer = submit(gw, "flux-2-pro", {"prompt": "x"}, key=BROKE_KEY)
    assert (answer.status_code, answer.json()) == (
        402,
        {"detail": "Your team's monthly budget is used up."},
    )
    assert sim.requests() == []


def test_the_teams_rate_limit_is_429_with_retry_after(gw: Gateway, sim: Sim) -> None:
    assert submit(gw, "flux-2-pro", {"prompt": "x"}, key=SLOW_KEY).status_code == 200
    limited = submit(gw, "flux-2-pro", {"prompt": "x"}, key=SLOW_KEY)
    assert limited.status_code == 429
    assert limited.json()["detail"].startswith(
        "Rate limit reached for your team's requests per minute; retry after "
    )
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"


def test_another_teams_job_and_unknown_ids_are_task_not_found(gw: Gateway, sim: Sim) -> None:
    sim.faults(bfl_ready_after=30)
    job_id = submit(gw, "flux-2-pro", {"prompt": "mine"}).json()["id"]
    for key, asked in ((OTHER_KEY, job_id), (CLIENT_KEY, "imgjob_unknown")):
        answer = get_result(gw, asked, key=key)
        assert (answer.status_code, answer.json()) == (
            404,
            {**POLL_KEYS, "id": asked, "status": "Task not found"},
        )
    missing = httpx.get(f"{gw.url}/v1/get_result", headers={"x-key": CLIENT_KEY})
    assert (missing.status_code, missing.json()) == (
        422,
        {"detail": [{"loc": ["query", "id"], "msg": "Field required", "type": "missing"}]},
    )


def test_moderated_prompts_end_request_moderated(gw: Gateway, sim: Sim) -> None:
    with pytest.raises(bfl_client.GenerationFailed) as failed:
        bfl_client.generate(gw.url, CLIENT_KEY, "flux-2-pro", {"prompt": "something forbidden"})
    answer = failed.value.answer
    assert (answer["status"], answer["details"]["code"]) == (
        "Request Moderated",
        "content_policy_violation",
    )


def test_other_failures_end_error(gw: Gateway, sim: Sim) -> None:
    sim.faults(bfl_final_status="Error")
    with pytest.raises(bfl_client.GenerationFailed) as failed:
        bfl_client.generate(gw.url, CLIENT_KEY, "flux-2-pro", {"prompt": "x"})
    answer = failed.value.answer
    assert answer["status"] == "Error"
    assert answer["details"]["status"] == 502
