"""Routing across upstreams: priority, fallback, shared load, and never paying twice."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import Gateway, GatewayFactory, UpstreamConfig, sim_upstream
from tests.helpers import Sim, free_port, image_bytes

AGGREGATOR_PATH = "/v1/images/generations"
PNG = image_bytes("PNG", (250, 0, 0))


def aggregator(sim: Sim, priority: int = 1, **fields: Any) -> UpstreamConfig:
    return sim_upstream(sim, "agg", "openai-images", keys=sim.keys[:1], priority=priority, **fields)


def bfl(sim: Sim, priority: int = 2) -> UpstreamConfig:
    return sim_upstream(sim, "bfl", "bfl", keys=sim.keys[1:], priority=priority)


def upstream_posts(sim: Sim) -> list[tuple[str, str]]:
    """(path, key) of every job submitted to either protocol, in order."""
    return [
        (r["path"], r["headers"].get("x-key") or r["headers"]["authorization"].split()[1])
        for r in sim.requests()
        if r["method"] == "POST"
    ]


def served_by(gw: Gateway, **fields: Any) -> str:
    fields.setdefault("model", "flux-2-pro")
    fields.setdefault("prompt", "a lighthouse")
    raw = gw.client().images.with_raw_response.generate(**fields)
    return str(raw.headers["x-gateway-upstream"])


@pytest.fixture
def agg_then_bfl(fresh_gateway: GatewayFactory, sim: Sim) -> Gateway:
    return fresh_gateway(upstreams=[aggregator(sim), bfl(sim)])


def test_first_priority_serves_when_it_can(agg_then_bfl: Gateway, sim: Sim) -> None:
    assert served_by(agg_then_bfl) == "agg"
    assert upstream_posts(sim) == [(AGGREGATOR_PATH, sim.keys[0])]


def test_rate_limited_aggregator_falls_back_to_bfl(agg_then_bfl: Gateway, sim: Sim) -> None:
    agg_key, bfl_key = sim.keys
    sim.faults(rate_limit_keys={agg_key: 60})
    assert served_by(agg_then_bfl) == "bfl"
    assert upstream_posts(sim) == [(AGGREGATOR_PATH, agg_key), ("/v1/flux-2-pro", bfl_key)]
    assert served_by(agg_then_bfl) == "bfl"
    assert upstream_posts(sim)[2:] == [("/v1/flux-2-pro", bfl_key)]


def test_request_only_bfl_can_honour_goes_straight_to_bfl(agg_then_bfl: Gateway, sim: Sim) -> None:
    raw = agg_then_bfl.client().images.with_raw_response.edit(
        model="flux-kontext-pro", prompt="combine", image=[PNG, PNG, PNG]
    )
    assert raw.headers["x-gateway-upstream"] == "bfl"
    assert upstream_posts(sim) == [("/v1/flux-kontext-pro", sim.keys[1])]


def test_upstream_that_cannot_honour_is_passed_over_whatever_its_priority(
    fresh_gateway: GatewayFactory, sim: Sim
) -> None:
    gw = fresh_gateway(upstreams=[bfl(sim, priority=1), aggregator(sim, priority=2)])
    assert served_by(gw, extra_body={"safety_tolerance": 6}) == "agg"
    assert upstream_posts(sim) == [(AGGREGATOR_PATH, sim.keys[0])]


def test_unreachable_upstream_is_passed_over(fresh_gateway: GatewayFactory, sim: Sim) -> None:
    dead = aggregator(sim, base_url=f"http://127.0.0.1:{free_port()}/v1")
    gw = fresh_gateway(upstreams=[dead, bfl(sim)])
    assert served_by(gw) == "bfl"
    assert upstream_posts(sim) == [("/v1/flux-2-pro", sim.keys[1])]


def test_equal_priorities_share_the_load(fresh_gateway: GatewayFactory, sim: Sim) -> None:
    gw = fresh_gateway(upstreams=[aggregator(sim, priority=1), bfl(sim, priority=1)])
    assert {served_by(gw) for _ in range(6)} == {"agg", "bfl"}


@pytest.mark.parametrize(
    ("priorities", "param"), [((1, 2), "input_image_2"), ((2, 1), "input_image_5")]
)
def test_request_no_upstream_can_honour_is_the_first_upstreams_400(
    fresh_gateway: GatewayFactory, sim: Sim, priorities: tuple[int, int], param: str
) -> None:
    agg_priority, bfl_priority = priorities
    gw = fresh_gateway(upstreams=[aggregator(sim, agg_priority), bfl(sim, bfl_priority)])
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().images.edit(model="flux-kontext-pro", prompt="combine", image=[PNG] * 5)
    assert caught.value.body["param"] == param
    assert sim.requests() == []


def test_job_that_may_have_been_charged_is_not_sent_to_the_next_upstream(
    agg_then_bfl: Gateway, sim: Sim
) -> None:
    sim.faults(fail_status=500, fail_count=1)
    with pytest.raises(openai.InternalServerError) as caught:
        agg_then_bfl.client(retries=2).images.generate(model="flux-2-pro", prompt="pay once")
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert upstream_posts(sim) == [(AGGREGATOR_PATH, sim.keys[0])]


@pytest.mark.parametrize(
    ("agg_priority", "bfl_priority", "first_post"),
    [(1, 2, (AGGREGATOR_PATH, 0)), (2, 1, ("/v1/flux-2-pro", 1))],
    ids=["aggregator-first", "bfl-first"],
)
def test_answer_cut_off_after_the_job_was_accepted_is_never_sent_again(
    fresh_gateway: GatewayFactory,
    sim: Sim,
    agg_priority: int,
    bfl_priority: int,
    first_post: tuple[str, int],
) -> None:
    """The connection drops halfway through the upstream's answer: the job exists upstream
    and may be charged, so the client gets a 502 and no other key or upstream sees it."""
    gw = fresh_gateway(upstreams=[aggregator(sim, agg_priority), bfl(sim, bfl_priority)])
    sim.faults(answer_cut_off=True)
    with pytest.raises(openai.InternalServerError) as caught:
        gw.client(retries=2).images.generate(model="flux-2-pro", prompt="pay once")
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    path, key_index = first_post
    assert upstream_posts(sim) == [(path, sim.keys[key_index])]
