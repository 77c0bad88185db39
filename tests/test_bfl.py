"""The `bfl` upstream through the real SDK: submit bodies, polling, final statuses, key health."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.errors import InvalidRequest, UpstreamError
from gateway.settings import UpstreamSettings
from gateway.sim import SimConfig
from gateway.upstreams import bfl as bfl_module
from gateway.upstreams.bfl import BflUpstream
from tests.conftest import SIM_POLL_HOST, Gateway, GatewayFactory, sim_upstream
from tests.helpers import Sim, image_bytes

PNG = image_bytes("PNG", (250, 0, 0))
JPEG = image_bytes("JPEG", (0, 250, 0))
WEBP = image_bytes("WEBP", (0, 0, 250))
SIM_CREDITS = SimConfig().credits
WAIT_S = 15.0


@pytest.fixture
def bfl(fresh_gateway: GatewayFactory, sim: Sim) -> Gateway:
    return fresh_gateway(upstreams=[sim_upstream(sim, "bfl", "bfl")])


@pytest.fixture
def restore_credits(sim: Sim) -> Iterator[None]:
    yield
    for key in sim.keys:
        set_credits(sim, key, SIM_CREDITS)


def set_credits(sim: Sim, key: str, credits: float) -> None:
    sim.client.post(f"{sim.url}/_sim/credits", json={"key": key, "credits": credits})


def submits(sim: Sim) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["method"] == "POST"]


def submit_keys(sim: Sim) -> list[str]:
    return [r["headers"]["x-key"] for r in submits(sim)]


def polls(sim: Sim) -> list[dict[str, Any]]:
    return sim.requests("/v1/get_result")


def bare(data: bytes) -> str:
    return base64.b64encode(data).decode()


def generate(gw: Gateway, **fields: Any) -> Any:
    """`images.generate` through the SDK, keeping the response headers."""
    fields.setdefault("model", "flux-2-pro")
    fields.setdefault("prompt", "a red fox")
    with gw.client() as client:
        return client.images.with_raw_response.generate(**fields)


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"


def test_flux2_size_becomes_width_height_and_the_job_is_polled_until_ready(
    bfl: Gateway, sim: Sim
) -> None:
    sim.faults(bfl_ready_after=0.7)
    raw = generate(bfl, size="1536x1024")
    assert raw.headers["x-gateway-upstream"] == "bfl"
    (submit,) = submits(sim)
    assert submit["path"] == "/v1/flux-2-pro"
    assert submit["headers"]["x-key"] == sim.keys[0]
    assert submit["json"] == {"prompt": "a red fox", "width": 1536, "height": 1024}
    (result,) = sim.results()
    regional = sim.url.replace("127.0.0.1", SIM_POLL_HOST)
    polling_url = f"{regional}/v1/get_result?id={result['id']}"
    assert len(polls(sim)) >= 2
    for poll in polls(sim):
        assert poll["method"] == "GET"
        assert f"http://{poll['headers']['host']}{poll['path']}?{poll['query']}" == polling_url
        assert poll["headers"]["x-key"] == sim.keys[0]
    durable = httpx.get(raw.parse().data[0].url)
    assert durable.content == httpx.get(f"{sim.url}/_sim/results/{result['id']}").content


def test_flux2_aspect_ratio_becomes_width_height_and_the_seed_comes_back(
    bfl: Gateway, sim: Sim
) -> None:
    raw = generate(bfl, extra_body={"aspect_ratio": "16:9", "seed": 42})
    assert sim.bodies() == [{"prompt": "a red fox", "width": 1360, "height": 768, "seed": 42}]
    assert raw.parse().data[0].model_extra["seed"] == 42


def test_kontext_takes_the_reduced_aspect_ratio_of_size(bfl: Gateway, sim: Sim) -> None:
    generate(bfl, model="flux-kontext-pro", size="1536x1024")
    (submit,) = submits(sim)
    assert submit["path"] == "/v1/flux-kontext-pro"
    assert submit["json"] == {"prompt": "a red fox", "aspect_ratio": "3:2"}


def test_flex_takes_steps_guidance_and_prompt_upsampling(bfl: Gateway, sim: Sim) -> None:
    extra = {"steps": 20, "guidance": 3.5, "prompt_upsampling": True, "safety_tolerance": 5}
    generate(bfl, model="flux-2-flex", size="1024x1024", extra_body=extra)
    (submit,) = submits(sim)
    assert submit["path"] == "/v1/flux-2-flex"
    assert submit["json"] == {"prompt": "a red fox", "width": 1024, "height": 1024, **extra}


def test_webp_output_on_flux2(bfl: Gateway, sim: Sim) -> None:
    raw = generate(bfl, extra_body={"output_format": "webp"})
    assert sim.bodies() == [{"prompt": "a red fox", "output_format": "webp"}]
    durable = httpx.get(raw.parse().data[0].url)
    assert durable.headers["content-type"] == "image/webp"
    assert durable.content[:4] == b"RIFF" and durable.content[8:12] == b"WEBP"


def test_kontext_takes_three_reference_images_as_bare_base64(bfl: Gateway, sim: Sim) -> None:
    raw = bfl.client().images.with_raw_response.edit(
        model="flux-kontext-pro", prompt="combine", image=[PNG, JPEG, WEBP]
    )
    assert raw.headers["x-gateway-upstream"] == "bfl"
    (submit,) = submits(sim)
    assert submit["path"] == "/v1/flux-kontext-pro"
    assert submit["json"] == {
        "prompt": "combine",
        "input_image": bare(PNG),
        "input_image_2": bare(JPEG),
        "input_image_3": bare(WEBP),
    }


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("flux-2-pro", {"safety_tolerance": 6}, "safety_tolerance"),
        ("flux-2-pro", {"prompt_upsampling": True}, "prompt_upsampling"),
        ("flux-2-pro", {"steps": 20}, "steps"),
        ("flux-kontext-pro", {"output_format": "gif"}, "output_format"),
        ("flux-kontext-pro", {"aspect_ratio": "4:1"}, "aspect_ratio"),
        (
            "flux-2-klein-4b",
            {"images": [f"https://example.com/{i}.png" for i in range(5)]},
            "input_image_5",
        ),
        ("flux-2-pro", {"width": 1000, "height": 1024}, "width"),
        ("flux-2-pro", {"width": 48, "height": 1024}, "width"),
    ],
)
def test_what_bfl_does_not_take_is_400_before_any_upstream_call(
    bfl: Gateway, sim: Sim, model: str, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        generate(bfl, model=model, extra_body=extra)
    assert caught.value.body["param"] == param
    assert sim.requests() == []


@pytest.mark.parametrize(
    ("extra", "sent"),
    [
        ({"width": 4096, "height": 2048}, {"width": 2896, "height": 1440}),
        ({"width": 4096, "height": 256}, {"width": 4096, "height": 256}),
        ({"size": "8192x1024"}, {"width": 5792, "height": 720}),
        ({"width": 0, "height": 0}, {}),
    ],
    ids=["8 MP scaled to 4 MP", "16:1 taken as it is", "8:1 size scaled", "0 never sent"],
)
def test_flux2_on_bfl_takes_any_ratio_and_is_scaled_down_to_4_mp(
    bfl: Gateway, sim: Sim, extra: dict[str, Any], sent: dict[str, int]
) -> None:
    generate(bfl, extra_body=extra)
    assert sim.bodies() == [{"prompt": "a red fox", **sent}]
    assert sent.get("width", 0) * sent.get("height", 0) <= 4 * 1024 * 1024


def test_kontext_on_bfl_takes_webp(bfl: Gateway, sim: Sim) -> None:
    raw = generate(bfl, model="flux-kontext-pro", extra_body={"output_format": "webp"})
    assert sim.bodies() == [{"prompt": "a red fox", "output_format": "webp"}]
    assert raw.http_response.json()["output_format"] == "webp"
    assert httpx.get(raw.parse().data[0].url).headers["content-type"] == "image/webp"


def test_kontext_on_bfl_takes_safety_tolerance_6(bfl: Gateway, sim: Sim) -> None:
    generate(bfl, model="flux-kontext-max", extra_body={"safety_tolerance": 6})
    assert sim.bodies() == [{"prompt": "a red fox", "safety_tolerance": 6}]


@pytest.mark.parametrize("status", ["Request Moderated", "Content Moderated"])
def test_moderation_is_content_policy_violation(bfl: Gateway, sim: Sim, status: str) -> None:
    sim.faults(bfl_final_status=status)
    with pytest.raises(openai.BadRequestError) as caught:
        bfl.client(retries=2).images.generate(model="flux-2-pro", prompt="a red fox")
    assert caught.value.code == "content_policy_violation"
    assert len(submits(sim)) == 1


@pytest.mark.parametrize("status", ["Error", "Failed", "Task not found"])
def test_failed_job_is_502_and_never_retried(bfl: Gateway, sim: Sim, status: str) -> None:
    sim.faults(bfl_final_status=status)
    with pytest.raises(openai.InternalServerError) as caught:
        bfl.client(retries=2).images.generate(model="flux-2-pro", prompt="a red fox")
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(submits(sim)) == 1


def test_job_past_timeout_is_504_and_never_retried(fresh_gateway: GatewayFactory, sim: Sim) -> None:
    gw = fresh_gateway(upstreams=[sim_upstream(sim, "bfl", "bfl", timeout_s=1)])
    sim.faults(bfl_ready_after=60)
    with pytest.raises(openai.InternalServerError) as caught:
        gw.client(retries=2).images.generate(model="flux-2-pro", prompt="a red fox")
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(submits(sim)) == 1
    assert len(polls(sim)) >= 1


def test_submit_500_is_502_and_not_sent_again(bfl: Gateway, sim: Sim) -> None:
    sim.faults(fail_status=500, fail_count=1)
    with pytest.raises(openai.InternalServerError) as caught:
        bfl.client(retries=2).images.generate(model="flux-2-pro", prompt="a red fox")
    assert caught.value.status_code == 502
    assert len(submits(sim)) == 1


@pytest.mark.parametrize("status", [502, 503])
def test_submit_unavailable_moves_to_the_next_key(bfl: Gateway, sim: Sim, status: int) -> None:
    sim.faults(fail_status=status, fail_count=1)
    generate(bfl)
    assert submit_keys(sim) == sim.keys


def test_refused_key_is_disabled_and_skipped(fresh_gateway: GatewayFactory, sim: Sim) -> None:
    good = sim.keys[0]
    gw = fresh_gateway(upstreams=[sim_upstream(sim, "bfl", "bfl", keys=["not-a-key", good])])
    generate(gw)
    generate(gw)
    assert submit_keys(sim) == ["not-a-key", good, good]


def test_rate_limited_key_cools_and_the_next_key_serves(bfl: Gateway, sim: Sim) -> None:
    first, second = sim.keys
    sim.faults(rate_limit_keys={first: 120})
    generate(bfl)
    generate(bfl)
    assert submit_keys(sim) == [first, second, second]


def test_key_without_credit_is_disabled_until_credits_show_again(
    fresh_gateway: GatewayFactory, sim: Sim, restore_credits: None
) -> None:
    empty, other = sim.keys
    gw = fresh_gateway(upstreams=[sim_upstream(sim, "bfl", "bfl", recheck_s=0.2)])
    set_credits(sim, empty, 0)
    generate(gw)
    assert submit_keys(sim) == [empty, other]
    generate(gw)
    generate(gw)
    assert submit_keys(sim) == [empty, other, other, other]
    checks = sim.requests("/v1/credits")
    assert checks and {c["headers"]["x-key"] for c in checks} == {empty}

    set_credits(sim, empty, 100)

    def served_by_the_empty_key_again() -> bool:
        assert generate(gw).http_response.status_code == 200
        return submit_keys(sim)[-1] == empty

    wait_for(served_by_the_empty_key_again)
    assert submit_keys(sim).count(empty) == 2


def most_jobs_at_once(sim: Sim) -> int:
    """The most jobs between their submit and their last poll, in the order the sim saw them."""
    seen = sim.requests()
    last_poll = {r["query"]: i for i, r in enumerate(seen) if r["path"] == "/v1/get_result"}
    running = most = 0
    for i, request in enumerate(seen):
        if request["method"] == "POST":
            running += 1
            most = max(most, running)
        elif last_poll.get(request["query"]) == i:
            running -= 1
    return most


def test_kontext_max_runs_at_most_six_jobs_per_key(fresh_gateway: GatewayFactory, sim: Sim) -> None:
    """Eight jobs on one key: two wait for a slot instead of earning the upstream's 429."""
    gw = fresh_gateway(upstreams=[sim_upstream(sim, "bfl", "bfl", keys=sim.keys[:1])])
    sim.faults(bfl_ready_after=0.6)
    images = gw.client().images.generate(model="flux-kontext-max", prompt="a red fox", n=8)
    assert len(images.data) == 8
    assert len(submits(sim)) == 8
    assert most_jobs_at_once(sim) == 6


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bfl_module, "FIRST_POLL_S", 0.01)
    monkeypatch.setattr(bfl_module, "MAX_POLL_S", 0.01)


def _upstream(handler: Callable[[httpx.Request], httpx.Response]) -> BflUpstream:
    settings = UpstreamSettings(
        name="bfl", kind="bfl", base_url="https://api.bfl.test", poll_hosts=["*.bfl.test"]
    )
    return BflUpstream(settings, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def _submitted(request: httpx.Request) -> httpx.Response | None:
    if request.method == "POST":
        return httpx.Response(200, json={"id": "j", "polling_url": "https://eu.bfl.test/p?id=j"})
    return None


async def test_failed_polls_are_tried_again(fast_polls: None) -> None:
    answers = iter([httpx.Response(503), httpx.Response(500, text="oops")])

    def handler(request: httpx.Request) -> httpx.Response:
        accepted = _submitted(request)
        if accepted is not None:
            return accepted
        assert str(request.url) == "https://eu.bfl.test/p?id=j"
        ready = {"status": "Ready", "result": {"sample": "https://d.bfl.ai/s.png", "seed": 3}}
        return next(answers, httpx.Response(200, json=ready))

    upstream = _upstream(handler)
    result = await upstream.generate({"model": "flux-2-pro", "prompt": "p"}, "k")
    assert (result.url, result.seed) == ("https://d.bfl.ai/s.png", 3)
    await upstream.aclose()


async def test_polls_failing_in_a_row_are_an_upstream_error(fast_polls: None) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        accepted = _submitted(request)
        if accepted is not None:
            return accepted
        raise httpx.ConnectError("down", request=request)

    upstream = _upstream(handler)
    with pytest.raises(UpstreamError) as caught:
        await upstream.generate({"model": "flux-2-pro", "prompt": "p"}, "k")
    assert caught.value.status == 502
    await upstream.aclose()


async def test_422_names_the_field_bfl_refused() -> None:
    detail = [{"loc": ["body", "input_image_2"], "msg": "bad image", "type": "value_error"}]
    upstream = _upstream(lambda request: httpx.Response(422, json={"detail": detail}))
    with pytest.raises(InvalidRequest) as caught:
        await upstream.generate({"model": "flux-2-pro", "prompt": "p"}, "k")
    assert caught.value.param == "input_image_2"
    assert "bad image" in caught.value.message
    await upstream.aclose()
