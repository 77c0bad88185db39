"""Upstream faults: every client gets its image or a clear error, and no job is sent twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.helpers import Sim


def downloads(sim: Sim) -> int:
    return len([r for r in sim.requests("/results/") if r["method"] == "GET"])


def fetched(sim: Sim) -> bytes:
    return httpx.get(f"{sim.url}/_sim/results/{sim.results()[0]['id']}").content


@pytest.fixture
def quick(fresh_gateway: GatewayFactory) -> Gateway:
    """A gateway that retries result downloads three times, 10 ms apart."""
    return fresh_gateway(cache={"download_attempts": 3, "download_backoff_s": 0.01})


def test_rate_limit_storm_cools_keys_instead_of_hammering(
    fresh_gateway: GatewayFactory, sim: Sim
) -> None:
    gw = fresh_gateway()
    sim.faults(rate_limit_keys={k: 60 for k in sim.keys})
    with ThreadPoolExecutor(10) as pool:
        first = list(pool.map(lambda _: gw.post(), range(10)))
    assert {r.status_code for r in first} == {503}
    submitted = len(sim.bodies())
    assert submitted <= 10 * len(sim.keys)
    with ThreadPoolExecutor(10) as pool:
        second = list(pool.map(lambda _: gw.post(), range(10)))
    assert {r.status_code for r in second} == {503}
    assert all(50 <= int(r.headers["retry-after"]) <= 60 for r in second)
    assert len(sim.bodies()) == submitted


def test_slow_result_body_is_delivered(quick: Gateway, sim: Sim) -> None:
    sim.faults(result_chunk_delay=0.02)
    response = quick.post()
    assert response.status_code == 200
    assert httpx.get(response.json()["data"][0]["url"]).content == fetched(sim)
    assert len(sim.bodies()) == 1


def test_transient_download_failures_are_retried(quick: Gateway, sim: Sim) -> None:
    sim.faults(result_status=503, result_status_count=2)
    response = quick.post()
    assert response.status_code == 200
    assert httpx.get(response.json()["data"][0]["url"]).content == fetched(sim)
    assert downloads(sim) == 3
    assert len(sim.bodies()) == 1


def test_truncated_body_is_retried_then_reported(quick: Gateway, sim: Sim) -> None:
    sim.faults(result_truncate=True)
    response = quick.post()
    assert response.status_code == 502
    assert response.headers["x-should-retry"] == "false"
    assert "could not be fetched" in response.json()["error"]["message"]
    assert downloads(sim) == 3
    assert len(sim.bodies()) == 1
    metrics = httpx.get(f"{quick.url}/metrics").text
    assert 'gateway_rehost_failures_total{reason="network"} 1.0' in metrics


def test_expired_link_is_not_retried(quick: Gateway, sim: Sim) -> None:
    sim.faults(result_url_ttl=0)
    response = quick.post()
    assert response.status_code == 502
    assert "answered 403" in response.json()["error"]["message"]
    assert downloads(sim) == 1
    assert len(sim.bodies()) == 1


@pytest.mark.parametrize("host", ["10.1.2.3:80", "169.254.169.254", "localhost"])
def test_result_on_a_host_outside_the_allow_list_is_never_fetched(
    quick: Gateway, sim: Sim, host: str
) -> None:
    sim.faults(result_host=host)
    response = quick.post()
    assert response.status_code == 502
    assert "not in allowed_result_hosts" in response.json()["error"]["message"]
    assert len(sim.bodies()) == 1


def test_fan_out_keeps_the_images_that_were_made(quick: Gateway, sim: Sim) -> None:
    sim.faults(fail_status=500, fail_count=1)
    response = quick.post(n=3, seed=10)
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2
    assert len(sim.bodies()) == 3
