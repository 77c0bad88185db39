"""Async image jobs (SPEC 4.6) against real gateways and the simulator: `Prefer: respond-async`,
the job object, reading back and listing, team isolation, idempotency, limits, and resume after
a restart of one process on memory state."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.settings import Settings
from gateway.state.connection import RedisConnection
from gateway.state.jobs.base import JobStore
from gateway.state.memory import memory_state
from gateway.state.redis import redis_state
from tests.conftest import (
    CLIENT_KEY,
    LIMITED_KEY,
    Gateway,
    GatewayFactory,
    Launch,
    gateway_settings,
    sim_upstream,
    start_gateway,
)
from tests.helpers import RedisServer, Sim

ASYNC = {"prefer": "respond-async"}
WAIT_S = 30.0
POLL_S = 0.05


def auth(key: str = CLIENT_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def submit(gw: Gateway, key: str = CLIENT_KEY, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{gw.url}/v1/images/generations",
        headers={**auth(key), **ASYNC},
        json={"model": "flux-2-pro", "prompt": "x", **body},
        timeout=30,
    )


def wait_job(gw: Gateway, job_id: str, key: str = CLIENT_KEY) -> dict[str, Any]:
    """Poll the job as a client does until it has ended (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(
            f"{gw.url}/v1/images/jobs/{job_id}", headers=auth(key), timeout=10
        ).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(POLL_S)
    raise AssertionError(f"job {job_id} did not end within {WAIT_S} s")


def sim_sha(sim: Sim) -> str:
    (issued,) = sim.results()
    return str(issued["sha256"])


def test_async_job_through_the_openai_sdk_ends_with_the_durable_image(
    gateway: Gateway, sim: Sim
) -> None:
    raw = gateway.client().images.with_raw_response.generate(
        model="flux-2-pro", prompt="a lighthouse", extra_headers=ASYNC
    )
    assert raw.status_code == 202
    job = raw.http_response.json()
    assert raw.headers["location"] == f"/v1/images/jobs/{job['id']}"
    assert raw.headers["preference-applied"] == "respond-async"
    assert job["id"].startswith("imgjob_") and len(job["id"]) == len("imgjob_") + 40
    assert job["object"] == "image.job"
    assert job["status"] in ("queued", "running")
    assert job["model"] == "flux-2-pro"
    assert job["request_id"] == raw.headers["x-request-id"]
    assert set(job) == {"id", "object", "status", "created", "model", "request_id"}

    ended = wait_job(gateway, job["id"])
    assert ended["status"] == "succeeded"
    result = ended["result"]
    assert set(result) == {"created", "data", "output_format", "size"}
    (item,) = result["data"]
    image = httpx.get(item["url"], timeout=10)
    assert image.status_code == 200
    assert hashlib.sha256(image.content).hexdigest() == sim_sha(sim)
    again = httpx.get(f"{gateway.url}{raw.headers['location']}", headers=auth(), timeout=10)
    assert again.json() == ended


def test_job_result_is_the_synchronous_body(gateway: Gateway, sim: Sim) -> None:
    sync = gateway.post(prompt="same", seed=7, response_format="b64_json").json()
    job = wait_job(
        gateway, submit(gateway, prompt="same", seed=7, response_format="b64_json").json()["id"]
    )
    result = job["result"]
    assert {k: v for k, v in result.items() if k != "created"} == {
        k: v for k, v in sync.items() if k != "created"
    }
    assert abs(result["created"] - sync["created"]) < 60
    assert result["output_format"] == "jpeg"
    assert base64.b64decode(result["data"][0]["b64_json"])[:3] == b"\xff\xd8\xff"


def test_failed_job_carries_the_synchronous_error_and_its_status(gateway: Gateway) -> None:
    sync = gateway.post(prompt="something forbidden")
    accepted = submit(gateway, prompt="something forbidden")
    assert accepted.status_code == 202
    job = wait_job(gateway, accepted.json()["id"])
    assert job["status"] == "failed"
    assert "result" not in job
    assert job["error"] == {**sync.json()["error"], "status": sync.status_code}
    assert job["error"]["code"] == "content_policy_violation"
    assert job["error"]["status"] == 400


def test_bad_input_is_refused_at_once_without_a_job(gateway: Gateway, sim: Sim) -> None:
    answer = submit(gateway, n=11)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "n"
    assert "location" not in answer.headers
    unknown = submit(gateway, model="flux-9000")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "model_not_found"
    assert sim.requests() == []


def test_webhook_url_on_a_synchronous_request_is_refused(gateway: Gateway, sim: Sim) -> None:
    answer = gateway.post(webhook_url="https://hooks.example.com/x")
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "webhook_url"
    assert sim.requests() == []


def test_another_teams_job_is_not_found(gateway: Gateway) -> None:
    job_id = submit(gateway).json()["id"]
    wait_job(gateway, job_id)
    for key, wanted in ((LIMITED_KEY, job_id), (CLIENT_KEY, "imgjob_" + "0" * 40)):
        answer = httpx.get(f"{gateway.url}/v1/images/jobs/{wanted}", headers=auth(key))
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found"
    listed = httpx.get(f"{gateway.url}/v1/images/jobs", headers=auth(LIMITED_KEY)).json()
    assert job_id not in [j["id"] for j in listed["data"]]


def test_jobs_are_listed_newest_first_in_pages(fresh_gateway: GatewayFactory) -> None:
    gw = fresh_gateway()
    ids = [submit(gw, prompt=f"p{i}").json()["id"] for i in range(3)]
    for job_id in ids:
        wait_job(gw, job_id)
    url = f"{gw.url}/v1/images/jobs"
    first = httpx.get(url, params={"limit": 2}, headers=auth()).json()
    assert first["object"] == "list"
    assert [j["id"] for j in first["data"]] == [ids[2], ids[1]]
    assert first["has_more"] is True
    assert first["data"][0]["status"] == "succeeded"
    rest = httpx.get(url, params={"limit": 2, "after": ids[1]}, headers=auth()).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False
    bad = httpx.get(url, params={"limit": 0}, headers=auth())
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_idempotency_key_returns_the_same_job(gateway: Gateway, sim: Sim) -> None:
    headers = {**auth(), **ASYNC, "idempotency-key": f"job-{time.time_ns()}"}
    body = {"model": "flux-2-pro", "prompt": "once"}
    url = f"{gateway.url}/v1/images/generations"
    first = httpx.post(url, headers=headers, json=body, timeout=30)
    job = wait_job(gateway, first.json()["id"])
    second = httpx.post(url, headers=headers, json=body, timeout=30)
    assert second.status_code == 202
    assert second.headers["x-idempotent-replay"] == "true"
    assert second.json() == job
    assert len(sim.bodies()) == 1


def test_multipart_edit_can_be_async(gateway: Gateway, sim: Sim) -> None:
    from tests.helpers import image_bytes

    answer = httpx.post(
        f"{gateway.url}/v1/images/edits",
        headers={**auth(), **ASYNC},
        data={"model": "flux-2-pro", "prompt": "edit it"},
        files={"image": ("in.png", image_bytes("PNG"), "image/png")},
        timeout=30,
    )
    assert answer.status_code == 202
    assert wait_job(gateway, answer.json()["id"])["status"] == "succeeded"
    (sent,) = sim.bodies()
    assert sent["input_image"].startswith("data:image/png;base64,")


def test_a_running_job_counts_toward_team_concurrency(
    launch: Launch, sim: Sim, tmp_path: Path
) -> None:
    settings = gateway_settings(sim, tmp_path / "cache")
    settings.teams[0].max_concurrency = 1
    gw = launch(settings)
    sim.faults(latency=1.0)
    job_id = submit(gw).json()["id"]
    refused = submit(gw)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert wait_job(gw, job_id)["status"] == "succeeded"
    sim.faults()
    assert submit(gw).status_code == 202


def bfl_settings(sim: Sim, cache: Path, lease_s: float) -> Settings:
    settings = gateway_settings(sim, cache, upstreams=[sim_upstream(sim, "bfl", "bfl")])
    settings.state.lease_s = lease_s
    return settings


def test_memory_state_resumes_a_bfl_job_after_a_restart(sim: Sim, tmp_path: Path) -> None:
    sim.faults(bfl_ready_after=3.0)
    submits_before = sim.client.get(f"{sim.url}/_sim/stats").json()["submits"]
    first = start_gateway(bfl_settings(sim, tmp_path / "cache", lease_s=2.0))
    try:
        job_id = submit(first).json()["id"]
        deadline = time.monotonic() + WAIT_S
        while not sim.requests("/v1/get_result") and time.monotonic() < deadline:
            time.sleep(POLL_S)
    finally:
        first.server.stop()
    second = start_gateway(bfl_settings(sim, tmp_path / "cache", lease_s=2.0))
    try:
        job = wait_job(second, job_id)
        assert job["status"] == "succeeded"
        assert len(sim.bodies()) == 1
        stats = sim.client.get(f"{sim.url}/_sim/stats").json()
        assert stats["submits"] == submits_before + 1
        image = httpx.get(job["result"]["data"][0]["url"], timeout=10)
        assert hashlib.sha256(image.content).hexdigest() in {r["sha256"] for r in sim.results()}
    finally:
        second.server.stop()


@pytest.fixture(params=["memory", "redis"])
async def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    if request.param == "memory":
        yield memory_state(jobs_folder=tmp_path / "jobs").jobs
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    conn = RedisConnection(server.url)
    yield redis_state(conn).jobs
    await conn.aclose()


async def test_only_one_replica_takes_over_an_expired_job(job_store: JobStore) -> None:
    await job_store.job_create("imgjob_x", "design", 1.0, b"{}", "dead", lease_s=0.0)
    assert await job_store.job_expired(10) == ["imgjob_x"]
    claims = await asyncio.gather(
        *(job_store.job_claim("imgjob_x", f"replica-{i}", 30.0) for i in range(8))
    )
    assert sorted(claims) == [False] * 7 + [True]
    winner = f"replica-{claims.index(True)}"
    assert await job_store.job_expired(10) == []
    assert await job_store.job_end("imgjob_x", b'{"end": "dead"}', "dead", 60.0) is False
    assert await job_store.job_renew(["imgjob_x"], "dead", 30.0) == ["imgjob_x"]
    assert await job_store.job_end("imgjob_x", b'{"end": 1}', winner, 60.0) is True
    assert await job_store.job_get("imgjob_x") == b'{"end": 1}'
    assert await job_store.job_claim("imgjob_x", "late", 30.0) is False


async def test_memory_job_records_survive_a_new_store_on_the_same_folder(tmp_path: Path) -> None:
    first = memory_state(jobs_folder=tmp_path / "jobs").jobs
    await first.job_create("imgjob_a", "design", 1.0, b'{"a": 1}', "gone", lease_s=0.0)
    await first.job_create("imgjob_b", "design", 2.0, b'{"b": 2}', "gone", lease_s=0.0)
    assert await first.job_end("imgjob_b", b'{"b": "done"}', "gone", 60.0)
    again = memory_state(jobs_folder=tmp_path / "jobs").jobs
    assert await again.job_page("design", None, 10) == [(b'{"b": "done"}', 2.0), (b'{"a": 1}', 1.0)]
    assert await again.job_expired(10) == ["imgjob_a"]
    assert await again.job_claim("imgjob_a", "new", 30.0) is True
