"""Jobs survive their replica (SPEC 4.6): two `flux-gateway serve` processes on one Redis, the
one running a job SIGKILLed; the other takes the job over once its lease has run out."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis as redis_lib

from gateway.keys import hash_key
from tests.helpers import RedisServer, Sim, free_port, gateway_process, write_config

KEY = "sk-test-takeover-0123456789"
WAIT_S = 30.0
POLL_S = 0.05
LEASE_S = 2

UPSTREAMS = {
    "bfl": """
[[upstreams]]
name = "bfl"
kind = "bfl"
base_url = "{sim}"
poll_hosts = ["localhost"]
keys = ["{key}"]
models = ["flux-2-pro"]
""",
    "agg": """
[[upstreams]]
name = "agg"
kind = "openai-images"
base_url = "{sim}/v1"
keys = ["{key}"]
models = ["flux-2-pro"]
""",
}


def config(tmp_path: Path, name: str, port: int, sim: Sim, redis: RedisServer, kind: str) -> Path:
    upstream = UPSTREAMS[kind].format(sim=sim.url, key=sim.keys[0])
    return write_config(
        tmp_path / f"{name}.toml",
        f"""
[server]
port = {port}

[state]
backend = "redis"
redis_url = "{redis.url}"
lease_s = {LEASE_S}

[cache]
dir = "{tmp_path / "cache"}"
allowed_result_hosts = ["127.0.0.1"]
allow_http_results = true
{upstream}
[[teams]]
name = "shared"
key_hashes = ["{hash_key(KEY)}"]
""",
    )


@contextmanager
def two_replicas(
    tmp_path: Path, sim: Sim, redis: RedisServer, kind: str
) -> Iterator[list[tuple[str, Any]]]:
    """Two processes, each as (base URL, process)."""
    redis.flush()
    with ExitStack() as stack:
        replicas = []
        for name in ("a", "b"):
            port = free_port()
            process = stack.enter_context(
                gateway_process(config(tmp_path, name, port, sim, redis, kind), port)
            )
            replicas.append((f"http://127.0.0.1:{port}", process))
        yield replicas


def submit(url: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{url}/v1/images/generations",
        headers={"authorization": f"Bearer {KEY}", "prefer": "respond-async"},
        json={"model": "flux-2-pro", "prompt": "a long one"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def until(seen: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not seen():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(POLL_S)


def ended(url: str, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def done() -> bool:
        job = httpx.get(
            f"{url}/v1/images/jobs/{job_id}", headers={"authorization": f"Bearer {KEY}"}
        ).json()
        found.update(job)
        return job["status"] in ("succeeded", "failed")

    until(done, f"job {job_id} end")
    return found


def test_bfl_job_of_a_killed_replica_is_finished_by_the_other(
    tmp_path: Path, sim: Sim, redis_server: RedisServer
) -> None:
    sim.faults(bfl_ready_after=4.0)
    with two_replicas(tmp_path, sim, redis_server, "bfl") as [(a, process_a), (b, _)]:
        job = submit(a)
        until(lambda: sim.requests("/v1/get_result"), "a poll from replica a")
        process_a.kill()
        process_a.wait()
        polls_before = len(sim.requests("/v1/get_result"))
        finished = ended(b, job["id"])
        assert finished["status"] == "succeeded", finished
        assert finished["request_id"] == job["request_id"]
        assert len(sim.bodies()) == 1
        assert len(sim.requests("/v1/get_result")) > polls_before
        (issued,) = sim.results()
        image = httpx.get(finished["result"]["data"][0]["url"], timeout=10)
        assert image.status_code == 200
        assert hashlib.sha256(image.content).hexdigest() == issued["sha256"]
        spent = redis_lib.Redis.from_url(redis_server.url)
        try:
            month = time.strftime("%Y%m", time.gmtime())
            assert int(spent.get(f"fg:spend:shared:{month}") or 0) > 0
            assert spent.zcard("fg:jobleases:jobs") == 0
        finally:
            spent.close()


def test_aggregator_job_of_a_killed_replica_fails_interrupted_and_costs_nothing(
    tmp_path: Path, sim: Sim, redis_server: RedisServer
) -> None:
    sim.faults(latency=8.0)
    with two_replicas(tmp_path, sim, redis_server, "agg") as [(a, process_a), (b, _)]:
        job = submit(a)
        until(lambda: sim.bodies(), "the upstream call from replica a")
        process_a.kill()
        process_a.wait()
        finished = ended(b, job["id"])
        assert finished["status"] == "failed"
        assert finished["error"]["code"] == "job_interrupted"
        assert finished["error"]["status"] == 503
        assert "result" not in finished
        state = redis_lib.Redis.from_url(redis_server.url)
        try:
            day, month = (
                time.strftime("%Y%m%d", time.gmtime()),
                time.strftime("%Y%m", time.gmtime()),
            )
            assert int(state.get(f"fg:spend:shared:{month}") or 0) == 0
            assert int(state.get(f"fg:images:shared:{day}") or 0) == 0
            assert state.zcard("fg:inflight:shared") == 0
        finally:
            state.close()
