"""The gateway against the upstreams' real semantics: accounts, 403s that mean two things,
regional polling hosts, and what real OpenAI SDK apps send."""

from __future__ import annotations

import base64
import concurrent.futures
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.keys import fingerprint, hash_key
from gateway.settings import Settings
from gateway.sim import SimConfig, create_sim_app
from tests.conftest import (
    CLIENT_KEY,
    Gateway,
    GatewayFactory,
    gateway_settings,
    sim_upstream,
    start_gateway,
)
from tests.helpers import RedisServer, Sim, ThreadServer

ADMIN_KEY = "sk-admin-upstreams-0123456789"
WAIT_S = 20.0


@pytest.fixture
def own_sim() -> Iterator[Callable[[SimConfig], Sim]]:
    """Simulators of a test's own, for accounts and key marks the shared one does not have."""
    servers: list[ThreadServer] = []
    sims: list[Sim] = []

    def make(config: SimConfig) -> Sim:
        server = ThreadServer(create_sim_app(config)).start()
        servers.append(server)
        sims.append(Sim(server.url, list(config.keys)))
        return sims[-1]

    yield make
    for sim in sims:
        sim.close()
    for server in servers:
        server.stop()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in time"
        time.sleep(0.05)


def admin_upstream(gw: Gateway, name: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{gw.url}/admin/upstreams", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    return next(u for u in answer.json()["data"] if u["name"] == name)


def with_admin(settings: Settings) -> Settings:
    settings.admin.key_hashes = [hash_key(ADMIN_KEY)]
    return settings


def test_two_keys_of_one_bfl_account_never_exceed_its_max_concurrency_across_replicas(
    own_sim: Callable[[SimConfig], Sim], redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = ["acct-key-1", "acct-key-2"]
    sim = own_sim(SimConfig(keys=keys, accounts={"acct": keys}, poll_ready_after=0.3))
    redis_server.flush()
    replicas = []
    for i in range(2):
        settings = gateway_settings(
            sim,
            tmp_path / f"cache{i}",
            upstreams=[sim_upstream(sim, "bfl", "bfl", max_concurrency=3)],
            state={"backend": "redis", "redis_url": redis_server.url},
        )
        replicas.append(start_gateway(settings))
    try:
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: replicas[i % 2].post(), range(12)))
        assert [a.status_code for a in answers] == [200] * 12
        stats = httpx.get(f"{sim.url}/_sim/stats").json()
        assert stats["max_active_seen"] == {"acct": 3}
        submitted = {r["headers"]["x-key"] for r in sim.requests() if r["method"] == "POST"}
        assert submitted == set(keys)
    finally:
        for gw in replicas:
            gw.server.stop()


def test_a_key_out_of_quota_moves_the_request_to_the_next_key_and_comes_back(
    own_sim: Callable[[SimConfig], Sim], tmp_path: Path
) -> None:
    quota_key, good_key = "sk-quota-team-1", "sk-good-team-2"
    sim = own_sim(SimConfig(keys=[quota_key, good_key]))
    settings = gateway_settings(
        sim, tmp_path, upstreams=[sim_upstream(sim, "agg", "openai-images", recheck_s=0.3)]
    )
    gw = start_gateway(with_admin(settings))
    try:
        first = gw.client().images.generate(model="flux-2-pro", prompt="a quiet harbour")
        assert first.data[0].url
        used = [r["headers"]["authorization"] for r in sim.requests() if r["method"] == "POST"]
        assert used == [f"Bearer {quota_key}", f"Bearer {good_key}"]
        (quota,) = [
            k
            for k in admin_upstream(gw, "agg")["keys"]
            if k["fingerprint"] == fingerprint(quota_key)
        ]
        assert quota["state"] == "disabled"
        assert (
            quota["last_error"]
            == "agg: key refused (403) (upstream said: user quota is not enough)"
        )
        # Topped up at the aggregator: the re-check lets the key take a trial job again.
        sim.client.post(f"{sim.url}/_sim/credits", json={"key": quota_key, "credits": 10})

        def back() -> bool:
            keys = admin_upstream(gw, "agg")["keys"]
            return all(k["state"] == "healthy" for k in keys)

        wait_for(back, "the topped-up key to come back")
        sim.reset()
        for _ in range(2):
            gw.client().images.generate(model="flux-2-pro", prompt="a quiet harbour")
        used = {r["headers"]["authorization"] for r in sim.requests() if r["method"] == "POST"}
        assert f"Bearer {quota_key}" in used
    finally:
        gw.server.stop()


def test_a_key_not_entitled_to_the_model_is_disabled_not_moderation(
    own_sim: Callable[[SimConfig], Sim], tmp_path: Path
) -> None:
    noperm, good = "sk-noperm-1", "sk-good-1"
    sim = own_sim(SimConfig(keys=[noperm, good]))
    settings = gateway_settings(
        sim, tmp_path, upstreams=[sim_upstream(sim, "agg", "openai-images")]
    )
    gw = start_gateway(with_admin(settings))
    try:
        response = gw.post()
        assert response.status_code == 200, response.text
        states = {k["fingerprint"]: k["state"] for k in admin_upstream(gw, "agg")["keys"]}
        assert states == {fingerprint(noperm): "disabled", fingerprint(good): "healthy"}
    finally:
        gw.server.stop()


def test_a_moderation_403_stays_content_policy_and_the_key_healthy(
    fresh_gateway: GatewayFactory, sim: Sim
) -> None:
    gw = fresh_gateway()
    response = gw.post(prompt="something forbidden")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_policy_violation"
    assert len(sim.bodies()) == 1
    assert gw.post().status_code == 200


def test_every_key_out_of_quota_is_503_never_content_policy(
    own_sim: Callable[[SimConfig], Sim], tmp_path: Path
) -> None:
    sim = own_sim(SimConfig(keys=["sk-quota-a", "sk-quota-b"]))
    settings = gateway_settings(
        sim, tmp_path, upstreams=[sim_upstream(sim, "agg", "openai-images")]
    )
    gw = start_gateway(settings)
    try:
        response = gw.post()
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "upstream_unavailable"
        assert "403" in error["message"]
        assert "sk-quota" not in response.text
    finally:
        gw.server.stop()


def test_a_polling_url_outside_poll_hosts_is_never_called(
    fresh_gateway: GatewayFactory, sim: Sim
) -> None:
    gw = fresh_gateway(upstreams=[sim_upstream(sim, "bfl", "bfl", poll_hosts=["*.bfl.ai"])])
    with pytest.raises(openai.InternalServerError) as caught:
        gw.client(retries=2).images.generate(model="flux-2-pro", prompt="a red fox")
    assert caught.value.code == "upstream_error"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert "localhost" in caught.value.message
    assert [r["method"] for r in sim.requests()] == ["POST"]


def test_openai_fields_without_flux_meaning_are_accepted_and_named(
    client: openai.OpenAI, sim: Sim
) -> None:
    raw = client.images.with_raw_response.generate(
        model="flux-2-pro",
        prompt="a lighthouse",
        quality="high",
        style="vivid",
        background="opaque",
        moderation="auto",
        output_compression=80,
        extra_body={"input_fidelity": "high", "partial_images": 0, "stream": False},
    )
    assert raw.headers["x-gateway-ignored"] == (
        "quality,style,background,output_compression,input_fidelity,partial_images,stream,"
        "moderation"
    )
    assert sim.bodies() == [{"model": "flux-2-pro", "prompt": "a lighthouse"}]
    body = raw.http_response.json()
    assert (body["output_format"], body["size"]) == ("jpeg", "1024x1024")


@pytest.mark.parametrize(
    ("kind", "model", "expected"),
    [("openai-images", "flux-2-pro", 6), ("bfl", "flux-2-pro", 5), ("bfl", "flux-kontext-pro", 6)],
)
def test_moderation_low_asks_for_the_most_permissive_safety_tolerance(
    fresh_gateway: GatewayFactory, sim: Sim, kind: str, model: str, expected: int
) -> None:
    gw = fresh_gateway(upstreams=[sim_upstream(sim, "up", kind)])
    gw.client().images.generate(model=model, prompt="a storm", moderation="low")
    assert sim.bodies()[0]["safety_tolerance"] == expected


def test_moderation_low_keeps_a_given_safety_tolerance(client: openai.OpenAI, sim: Sim) -> None:
    client.images.generate(
        model="flux-2-pro", prompt="a storm", moderation="low", extra_body={"safety_tolerance": 1}
    )
    assert sim.bodies()[0]["safety_tolerance"] == 1


def test_no_model_uses_the_teams_default_and_its_response_format(sim: Sim, tmp_path: Path) -> None:
    settings = gateway_settings(
        sim,
        tmp_path,
        teams=[
            {
                "name": "design",
                "keys": [CLIENT_KEY],
                "default_model": "gpt-image-1",
                "default_response_format": "b64_json",
            }
        ],
        aliases={"gpt-image-1": "flux-2-klein-4b"},
    )
    gw = start_gateway(settings)
    try:
        response = httpx.post(
            f"{gw.url}/v1/images/generations",
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            json={"prompt": "a paper boat"},
        )
        assert response.status_code == 200, response.text
        assert sim.bodies() == [{"model": "flux-2-klein-4b", "prompt": "a paper boat"}]
        (item,) = response.json()["data"]
        assert base64.b64decode(item["b64_json"])[:3] == b"\xff\xd8\xff"
    finally:
        gw.server.stop()
