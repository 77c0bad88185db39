"""Upstream failures: what the client sees, which key pays, and that nothing is paid twice."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.helpers import Sim


def submit_keys(sim: Sim) -> list[str]:
    return [
        r["headers"]["authorization"].removeprefix("Bearer ")
        for r in sim.requests()
        if r["method"] == "POST"
    ]


def test_moderation_is_content_policy_violation(client: openai.OpenAI, sim: Sim) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="flux-2-pro", prompt="something forbidden here")
    assert caught.value.code == "content_policy_violation"
    assert len(sim.bodies()) == 1


def test_upstream_500_is_not_retried_by_the_sdk(gateway: Gateway, sim: Sim) -> None:
    sim.faults(fail_status=500, fail_count=1)
    with pytest.raises(openai.InternalServerError) as caught:
        gateway.client(retries=2).images.generate(model="flux-2-pro", prompt="pay once")
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.code == "upstream_error"
    assert len(sim.bodies()) == 1


def test_upstream_timeout_is_504_without_retry(fresh_gateway: GatewayFactory, sim: Sim) -> None:
    gw = fresh_gateway(timeout_s=0.5)
    sim.faults(hang=True)
    response = gw.post()
    assert response.status_code == 504
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert len(sim.bodies()) == 1


def test_rate_limited_key_cools_and_the_next_key_serves(
    fresh_gateway: GatewayFactory, sim: Sim
) -> None:
    first, second = sim.keys
    gw = fresh_gateway()
    sim.faults(rate_limit_keys={first: 120})
    assert gw.post().status_code == 200
    assert submit_keys(sim) == [first, second]
    for _ in range(3):
        assert gw.post().status_code == 200
    assert submit_keys(sim) == [first, second, second, second, second]


def test_every_key_rate_limited_is_503_with_retry_after(
    fresh_gateway: GatewayFactory, sim: Sim
) -> None:
    gw = fresh_gateway()
    sim.faults(rate_limit_keys={k: 30 for k in sim.keys})
    response = gw.post()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_unavailable"
    assert response.json()["error"]["type"] == "server_error"
    assert 25 <= int(response.headers["retry-after"]) <= 30
    again = gw.post()
    assert again.status_code == 503
    assert len(sim.bodies()) == 2


def test_bad_key_is_disabled_and_skipped(fresh_gateway: GatewayFactory, sim: Sim) -> None:
    gw = fresh_gateway(keys=["not-a-key", sim.keys[0]])
    assert gw.post().status_code == 200
    assert gw.post().status_code == 200
    assert submit_keys(sim) == ["not-a-key", sim.keys[0], sim.keys[0]]


def test_upstream_502_moves_to_the_next_key(fresh_gateway: GatewayFactory, sim: Sim) -> None:
    gw = fresh_gateway()
    sim.faults(fail_status=502, fail_count=1)
    assert gw.post().status_code == 200
    assert len(submit_keys(sim)) == 2
    assert len(set(submit_keys(sim))) == 2


def test_result_download_is_retried(gateway: Gateway, sim: Sim) -> None:
    sim.faults(result_status=500, result_status_count=2)
    response = gateway.post()
    assert response.status_code == 200
    assert (
        httpx.get(response.json()["data"][0]["url"]).content
        == httpx.get(f"{sim.url}/_sim/results/{sim.results()[0]['id']}").content
    )
    assert len(sim.bodies()) == 1


@pytest.mark.parametrize(
    ("faults", "reason"),
    [
        ({"result_not_image": True}, "not a PNG, JPEG or WebP"),
        ({"result_oversize_mb": 60}, "larger than max_result_mb"),
        ({"result_host": "localhost"}, "not in allowed_result_hosts"),
    ],
)
def test_unusable_result_is_502_and_not_retried(
    gateway: Gateway, sim: Sim, faults: dict[str, Any], reason: str
) -> None:
    sim.faults(**faults)
    response = gateway.post()
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    assert reason in response.json()["error"]["message"]
    assert len(sim.bodies()) == 1
