"""What operators see: metrics and usage that agree with the traffic, admin API, readiness,
the OpenAPI description, multiprocess metrics, and no secret anywhere they can look."""

from __future__ import annotations

import base64
import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from gateway.keys import fingerprint, hash_key
from gateway.requests import ImageRequest
from tests.conftest import Gateway, Launch, gateway_settings, start_gateway
from tests.helpers import (
    RedisServer,
    Sim,
    data_url,
    free_port,
    gateway_process,
    image_bytes,
    write_config,
)

ALPHA_KEY = "sk-test-alpha-secret-0123456789"
BETA_KEY = "sk-test-beta-secret-0123456789"
ADMIN_KEY = "sk-admin-secret-0123456789"
GENERATIONS = "/v1/images/generations"
Make = Callable[..., Gateway]


def teams(**alpha: Any) -> list[dict[str, Any]]:
    return [
        {"name": "alpha", "keys": [ALPHA_KEY], "monthly_budget_usd": 50.0, **alpha},
        {"name": "beta", "keys": [BETA_KEY]},
    ]


@pytest.fixture
def make_gateway(launch: Launch, sim: Sim, tmp_path: Path) -> Make:
    """Gateways with two teams and an admin key, on each state backend."""
    serial = itertools.count()

    def make(keys: list[str] | None = None, **alpha: Any) -> Gateway:
        settings = gateway_settings(
            sim,
            tmp_path / f"cache{next(serial)}",
            teams=teams(**alpha),
            admin={"key_hashes": [hash_key(ADMIN_KEY)]},
        )
        settings.upstreams[0].keys = keys if keys is not None else list(sim.keys)
        return launch(settings)

    return make


def post(gw: Gateway, key: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gw.url}{GENERATIONS}",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "flux-2-pro", "prompt": "x", **body},
        timeout=60,
    )


def admin_get(gw: Gateway, path: str, key: str = ADMIN_KEY) -> httpx.Response:
    return httpx.get(f"{gw.url}{path}", headers={"authorization": f"Bearer {key}"})


def samples(text: str, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` whose labels include `labels`."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def total(text: str, name: str, **labels: str) -> float:
    return sum(value for _, value in samples(text, name, **labels))


def by_status(text: str, team: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for labels, value in samples(text, "gateway_requests_total", route=GENERATIONS, team=team):
        found[labels["status"]] = found.get(labels["status"], 0) + value
    return found


def test_metrics_and_usage_agree_with_the_traffic(make_gateway: Make, sim: Sim) -> None:
    gw = make_gateway(rpm=3)
    statuses = [post(gw, ALPHA_KEY, n=n).status_code for n in (1, 1, 2, 1)]
    assert statuses == [200, 200, 200, 429]
    assert post(gw, BETA_KEY, n=3).status_code == 200
    assert post(gw, BETA_KEY, steps=20).status_code == 400
    assert post(gw, BETA_KEY, model="no-such-model-from-a-client").status_code == 404
    sim.faults(fail_status=500, fail_count=1)
    assert post(gw, BETA_KEY).status_code == 502
    assert post(gw, "sk-wrong").status_code == 401

    text = httpx.get(f"{gw.url}/metrics").text
    assert by_status(text, "alpha") == {"200": 3, "429": 1}
    assert by_status(text, "beta") == {"200": 1, "400": 1, "404": 1, "502": 1}
    assert by_status(text, "") == {"401": 1}
    assert "no-such-model-from-a-client" not in text
    assert total(text, "gateway_images_total", team="alpha", model="flux-2-pro") == 4
    assert total(text, "gateway_images_total", team="beta", model="flux-2-pro") == 3
    assert total(text, "gateway_rate_limited_total", team="alpha", reason="rpm") == 1
    assert total(text, "gateway_rate_limited_total", team="beta") == 0
    assert total(text, "gateway_spend_usd_total", team="alpha") == pytest.approx(0.12)
    assert total(text, "gateway_spend_usd_total", team="beta") == pytest.approx(0.09)
    assert total(text, "gateway_inflight_requests", team="alpha") == 0
    assert total(text, "gateway_team_budget_usd", team="alpha") == 50.0
    assert samples(text, "gateway_team_budget_usd", team="beta") == []
    assert total(text, "gateway_upstream_errors_total", upstream="agg", kind="error") == 1
    ok_jobs = total(text, "gateway_upstream_duration_seconds_count", outcome="ok")
    assert ok_jobs == 7
    assert total(text, "gateway_request_duration_seconds_count", model="flux-2-pro") == 7
    assert total(text, "gateway_request_duration_seconds_count", model="") == 2
    assert total(text, "gateway_cache_objects") == 7
    assert total(text, "gateway_overhead_seconds_count", route=GENERATIONS) == 8

    report = admin_get(gw, "/admin/usage").json()
    assert report["until"] == datetime.now(UTC).date().isoformat()
    by_team = {entry["team"]: entry for entry in report["data"]}
    assert by_team["alpha"]["totals"] == {
        "requests": 4,
        "images": 4,
        "errors": 0,
        "rate_limited": 1,
        "spend_usd": 0.12,
    }
    assert by_team["beta"]["totals"] == {
        "requests": 4,
        "images": 3,
        "errors": 3,
        "rate_limited": 0,
        "spend_usd": 0.09,
    }
    for entry in by_team.values():
        days = entry["days"]
        assert sum(day["requests"] for day in days) == entry["totals"]["requests"]
    only_beta = admin_get(gw, "/admin/usage?team=beta&since=2020-01-01").json()
    assert [entry["team"] for entry in only_beta["data"]] == ["beta"]
    assert only_beta["data"][0]["totals"] == by_team["beta"]["totals"]


def test_rehost_bytes_are_the_delivered_bytes(make_gateway: Make) -> None:
    gw = make_gateway()
    urls = [item["url"] for item in post(gw, BETA_KEY, n=2).json()["data"]]
    size = sum(len(httpx.get(url).content) for url in urls)
    text = httpx.get(f"{gw.url}/metrics").text
    assert total(text, "gateway_rehost_bytes_total") == size


def test_key_state_has_three_samples_per_key_from_start_up(make_gateway: Make, sim: Sim) -> None:
    first, second = sim.keys
    gw = make_gateway(keys=[first, second])
    text = httpx.get(f"{gw.url}/metrics").text
    states = {
        (labels["key"], labels["state"]): value
        for labels, value in samples(text, "gateway_upstream_key_state", upstream="agg")
    }
    assert states == {
        (fingerprint(key), state): 1.0 if state == "healthy" else 0.0
        for key in (first, second)
        for state in ("healthy", "cooling", "disabled")
    }
    sim.faults(rate_limit_keys={first: 60})
    assert post(gw, BETA_KEY).status_code == 200
    text = httpx.get(f"{gw.url}/metrics").text
    cooling = {
        labels["state"]: value
        for labels, value in samples(text, "gateway_upstream_key_state", key=fingerprint(first))
    }
    assert cooling == {"healthy": 0.0, "cooling": 1.0, "disabled": 0.0}


@pytest.mark.parametrize("key", [None, ALPHA_KEY, "sk-admin-wrong"])
def test_admin_routes_need_the_admin_key(make_gateway: Make, key: str | None) -> None:
    gw = make_gateway()
    headers = {"authorization": f"Bearer {key}"} if key else {}
    answers = [
        httpx.get(f"{gw.url}/admin/usage", headers=headers),
        httpx.get(f"{gw.url}/admin/upstreams", headers=headers),
        httpx.post(f"{gw.url}/admin/upstreams/agg/keys/0123456789/enable", headers=headers),
    ]
    for answer in answers:
        assert answer.status_code == 401
        assert answer.json()["error"]["type"] == "authentication_error"
        assert answer.json()["error"]["code"] == "invalid_api_key"
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}
    assert admin_get(gw, "/admin/usage").status_code == 200


def test_admin_usage_rejects_a_bad_since_and_an_unknown_team(make_gateway: Make) -> None:
    gw = make_gateway()
    bad = admin_get(gw, "/admin/usage?since=last-week")
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "since")
    unknown = admin_get(gw, "/admin/usage?team=nobody")
    assert (unknown.status_code, unknown.json()["error"]["param"]) == (404, "team")


def test_a_disabled_key_is_shown_and_enabled_through_the_admin_api(
    make_gateway: Make, sim: Sim
) -> None:
    only = sim.keys[0]
    gw = make_gateway(keys=[only])
    sim.faults(no_credit_keys=[only])
    assert post(gw, BETA_KEY).json()["error"]["code"] == "upstream_unavailable"
    sim.faults()
    assert post(gw, BETA_KEY).status_code == 503
    assert httpx.get(f"{gw.url}/readyz").status_code == 503

    upstreams = admin_get(gw, "/admin/upstreams").json()["data"]
    assert [u["name"] for u in upstreams] == ["agg"]
    [key] = upstreams[0]["keys"]
    assert key["fingerprint"] == fingerprint(only)
    assert (key["state"], key["in_flight"], key["cooldown_until"]) == ("disabled", 0, None)
    assert "credit" in key["last_error"]
    assert key["recheck_at"] is not None

    path = f"/admin/upstreams/agg/keys/{fingerprint(only)}/enable"
    missing = httpx.post(f"{gw.url}/admin/upstreams/agg/keys/ffffffffff/enable", headers=auth())
    assert missing.status_code == 404
    assert (
        httpx.post(f"{gw.url}/admin/upstreams/nope/keys/x/enable", headers=auth()).status_code
        == 404
    )
    enabled = httpx.post(f"{gw.url}{path}", headers=auth())
    assert enabled.status_code == 200
    assert enabled.json()["keys"][0]["state"] == "healthy"
    assert httpx.get(f"{gw.url}/readyz").status_code == 200
    assert post(gw, BETA_KEY).status_code == 200


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    name = schema["$ref"].removeprefix("#/components/schemas/")
    found: dict[str, Any] = document["components"]["schemas"][name]
    return found


def test_openapi_describes_the_api_from_the_request_model(make_gateway: Make) -> None:
    gw = make_gateway()
    answer = httpx.get(f"{gw.url}/openapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/models",
        "/v1/models/{model}",
        "/images/{name}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/admin/usage",
        "/admin/upstreams",
        "/admin/upstreams/{name}/keys/{fingerprint}/enable",
        "/admin/usage/series",
        "/admin/errors",
        "/v1/console/images",
        "/v1/console/usage",
    }
    fields = set(ImageRequest.model_fields)
    generation = doc["paths"]["/v1/images/generations"]["post"]["requestBody"]["content"]
    assert set(generation) == {"application/json"}
    request_schema = resolve(doc, generation["application/json"]["schema"])
    assert set(request_schema["properties"]) == fields
    assert request_schema["required"] == ["prompt"]  # no model: the team's default_model
    assert request_schema["additionalProperties"] is False
    edit = doc["paths"]["/v1/images/edits"]["post"]["requestBody"]["content"]
    assert set(edit) == {"multipart/form-data", "application/json"}
    form = resolve(doc, edit["multipart/form-data"]["schema"])
    assert set(form["properties"]) == fields | {"image[]"}
    assert form["properties"]["image[]"]["items"]["contentMediaType"] == "application/octet-stream"
    error = doc["components"]["schemas"]["Error"]["properties"]["error"]
    assert error["required"] == ["message", "type", "param", "code"]
    assert doc["security"] == [{"clientKey": []}]
    assert doc["components"]["securitySchemes"]["clientKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A team's client key",
    }
    assert doc["paths"]["/admin/usage"]["get"]["security"] == [{"adminKey": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def test_openapi_is_a_valid_openapi_3_1_document(make_gateway: Make) -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    gw = make_gateway()
    validator.validate(httpx.get(f"{gw.url}/openapi.json").json())


def test_readyz_fails_while_draining(make_gateway: Make) -> None:
    gw = make_gateway()
    ready = httpx.get(f"{gw.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "checks": {"state": True, "cache": True, "upstreams": True, "accepting": True},
    }
    app: Starlette = gw.server.server.config.app  # type: ignore[assignment]
    app.state.draining = True
    draining = httpx.get(f"{gw.url}/readyz")
    assert draining.status_code == 503
    assert draining.json()["checks"]["accepting"] is False
    assert httpx.get(f"{gw.url}/healthz").status_code == 200


@pytest.mark.parametrize(("mode", "status"), [("fail-closed", 503), ("fail-open", 200)])
def test_readyz_follows_the_state_backend(sim: Sim, tmp_path: Path, mode: str, status: int) -> None:
    redis = RedisServer(tmp_path).start()
    settings = gateway_settings(sim, tmp_path / "cache")
    settings.state.backend = "redis"
    settings.state.redis_url = redis.url
    settings.state.on_redis_error = mode  # type: ignore[assignment]
    gw = start_gateway(settings)
    try:
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
        redis.stop()
        down = httpx.get(f"{gw.url}/readyz")
        assert down.status_code == status
        assert down.json()["checks"]["state"] is False
    finally:
        gw.server.stop()
        redis.stop()


def test_metrics_token_protects_metrics(sim: Sim, tmp_path: Path) -> None:
    settings = gateway_settings(sim, tmp_path / "cache", server={"metrics_token": "tok-secret"})
    gw = start_gateway(settings)
    try:
        assert httpx.get(f"{gw.url}/metrics").status_code == 401
        wrong = httpx.get(f"{gw.url}/metrics", headers=auth("tok-wrong"))
        assert wrong.status_code == 401
        right = httpx.get(f"{gw.url}/metrics", headers=auth("tok-secret"))
        assert right.status_code == 200
        assert "gateway_upstream_key_state" in right.text
    finally:
        gw.server.stop()


def config_text(sim: Sim, tmp_path: Path, port: int) -> str:
    return f"""
[server]
port = {port}
metrics_token = "metrics-token-secret-0123"

[cache]
dir = "{tmp_path / "cache"}"
allowed_result_hosts = ["127.0.0.1"]
allow_http_results = true

[log]
level = "debug"

[[upstreams]]
name = "agg"
kind = "openai-images"
base_url = "{sim.url}/v1"
keys_env = "OBS_UPSTREAM_KEYS"
models = ["flux-2-pro", "flux-kontext-pro"]

[[teams]]
name = "alpha"
key_hashes = ["{hash_key(ALPHA_KEY)}"]
rpm = 5

[admin]
key_hashes = ["{hash_key(ADMIN_KEY)}"]
"""


def test_no_secret_reaches_logs_metrics_or_admin_output(sim: Sim, tmp_path: Path) -> None:
    port = free_port()
    bad_upstream_key = "upstream-bad-secret-0123456789"
    config = write_config(tmp_path / "gateway.toml", config_text(sim, tmp_path, port))
    env = {"OBS_UPSTREAM_KEYS": ",".join([bad_upstream_key, *sim.keys])}
    png = image_bytes("PNG", (10, 200, 90))
    reference = data_url(png, "image/png")
    mislabelled = data_url(png, "image/jpeg")
    prompt = "a-private-prompt-about-the-launch"
    url = f"http://127.0.0.1:{port}"
    token = "metrics-token-secret-0123"
    seen: list[str] = []
    with (
        gateway_process(config, port, env) as process,
        httpx.Client(base_url=url, headers=auth(ALPHA_KEY), timeout=60) as client,
    ):
        sim.faults(rate_limit_keys={sim.keys[0]: 60})
        answers = [
            client.post(GENERATIONS, json={"model": "flux-2-pro", "prompt": prompt}),
            client.post(
                GENERATIONS,
                json={"model": "flux-kontext-pro", "prompt": prompt, "input_image": reference},
            ),
            client.post(
                "/v1/images/edits",
                data={"model": "flux-kontext-pro", "prompt": prompt},
                files={"image": ("ref.png", png, "application/octet-stream")},
            ),
            client.post(
                GENERATIONS,
                json={"model": "flux-2-pro", "prompt": prompt, "input_image": mislabelled},
            ),
            client.post(GENERATIONS, json={"model": "flux-2-pro", "prompt": "forbidden " + prompt}),
            httpx.post(f"{url}{GENERATIONS}", headers=auth(BETA_KEY), json={}),
            *[client.post(GENERATIONS, json={"model": "flux-2-pro", "prompt": "x"}) for _ in "ab"],
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 400, 400, 401, 200, 429]
        seen += [a.text for a in answers]
        upstreams = httpx.get(f"{url}/admin/upstreams", headers=auth(ADMIN_KEY)).text
        seen.append(upstreams)
        seen.append(httpx.get(f"{url}/admin/usage", headers=auth(ADMIN_KEY)).text)
        seen.append(httpx.get(f"{url}/metrics", headers=auth(token)).text)
        seen.append(httpx.get(f"{url}/admin/usage", headers=auth(ALPHA_KEY)).text)
        seen.append(httpx.get(f"{url}/openapi.json").text)
    assert process.stdout is not None
    logs = process.stdout.read().decode()
    assert '"msg":"request"' in logs
    assert fingerprint(bad_upstream_key) in upstreams
    secrets = [
        ALPHA_KEY,
        BETA_KEY,
        ADMIN_KEY,
        token,
        bad_upstream_key,
        *sim.keys,
        base64.b64encode(png).decode()[20:60],
    ]
    for text in [logs, *seen]:
        for secret in secrets:
            assert secret not in text
    assert prompt not in logs


OTHER_WORKER = """
from gateway.metrics import Metrics
Metrics().requests.labels(
    route="/v1/images/generations", model="flux-2-pro", team="alpha", status="200"
).inc(5)
"""


def test_metrics_merge_every_process_of_the_multiprocess_folder(sim: Sim, tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, /metrics adds up what every worker process counted."""
    folder = tmp_path / "multiproc"
    port = free_port()
    config = write_config(tmp_path / "gateway.toml", config_text(sim, tmp_path, port))
    env = {"OBS_UPSTREAM_KEYS": ",".join(sim.keys), "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    url = f"http://127.0.0.1:{port}"
    body = {"model": "flux-2-pro", "prompt": "x"}
    with gateway_process(config, port, env) as process:
        for _ in range(2):
            assert httpx.post(f"{url}{GENERATIONS}", headers=auth(ALPHA_KEY), json=body).is_success
        subprocess.run([sys.executable, "-c", OTHER_WORKER], env={**os.environ, **env}, check=True)
        text = httpx.get(f"{url}/metrics", headers=auth("metrics-token-secret-0123")).text
    assert by_status(text, "alpha") == {"200": 7}
    assert total(text, "gateway_images_total", team="alpha") == 2
    assert total(text, "gateway_cache_objects") == 2
    assert samples(text, "gateway_inflight_requests") == [({"team": "alpha"}, 0.0)]
    assert len(samples(text, "gateway_upstream_key_state")) == 3 * len(sim.keys)
    assert list(folder.glob(f"gauge_livesum_{process.pid}.db")) == []
