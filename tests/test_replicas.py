"""Several gateway processes sharing one Redis: limits hold exactly, dead replicas leak nothing."""

from __future__ import annotations

import itertools
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import redis as redis_lib

from gateway.keys import fingerprint, hash_key
from tests.conftest import gateway_settings, start_gateway
from tests.helpers import RedisServer, Sim, free_port, gateway_process, write_config

KEY = "sk-test-replicas-0123456789"


def replica_config(
    tmp_path: Path, name: str, port: int, sim: Sim, redis: RedisServer, team: str
) -> Path:
    return write_config(
        tmp_path / f"{name}.toml",
        f"""
[server]
port = {port}

[state]
backend = "redis"
redis_url = "{redis.url}"
lease_s = 2

[cache]
dir = "{tmp_path / "cache"}"
allowed_result_hosts = ["127.0.0.1"]
allow_http_results = true

[[upstreams]]
name = "agg"
kind = "openai-images"
base_url = "{sim.url}/v1"
keys = ["{sim.keys[0]}"]
models = ["flux-2-pro"]
max_concurrency_per_key = 2

[[teams]]
name = "shared"
key_hashes = ["{hash_key(KEY)}"]
{team}
""",
    )


def start_two(
    stack: ExitStack, tmp_path: Path, sim: Sim, redis: RedisServer, team: str
) -> list[str]:
    urls = []
    for name in ("a", "b"):
        port = free_port()
        stack.enter_context(
            gateway_process(replica_config(tmp_path, name, port, sim, redis, team), port)
        )
        urls.append(f"http://127.0.0.1:{port}")
    return urls


def post(url: str) -> int:
    return httpx.post(
        f"{url}/v1/images/generations",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "flux-2-pro", "prompt": "x"},
        timeout=60,
    ).status_code


def test_rpm_is_exact_across_two_processes(
    tmp_path: Path, sim: Sim, redis_server: RedisServer
) -> None:
    redis_server.flush()
    with ExitStack() as stack:
        urls = start_two(stack, tmp_path, sim, redis_server, "rpm = 7")
        targets = list(itertools.islice(itertools.cycle(urls), 30))
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(post, targets))
    assert statuses.count(200) == 7
    assert statuses.count(429) == 23
    assert len(sim.bodies()) == 7


def test_concurrency_is_exact_across_two_processes(
    tmp_path: Path, sim: Sim, redis_server: RedisServer
) -> None:
    redis_server.flush()
    sim.faults(latency=3.0)
    with ExitStack() as stack:
        urls = start_two(stack, tmp_path, sim, redis_server, "max_concurrency = 3")
        targets = list(itertools.islice(itertools.cycle(urls), 10))
        with ThreadPoolExecutor(10) as pool:
            statuses = list(pool.map(post, targets))
    assert sorted(statuses) == [200] * 3 + [429] * 7


def live_slots(redis: RedisServer, name: str) -> int:
    client = redis_lib.Redis.from_url(redis.url)
    try:
        seconds, micros = client.time()
        return int(client.zcount(name, seconds * 1000 + micros // 1000, "+inf"))
    finally:
        client.close()


def test_killed_replica_leaks_no_capacity(
    tmp_path: Path, sim: Sim, redis_server: RedisServer
) -> None:
    redis_server.flush()
    sim.faults(latency=60.0)
    port_a, port_b = free_port(), free_port()
    team = "max_concurrency = 2"
    slots = f"fg:slots:agg:{fingerprint(sim.keys[0])}"
    config_a = replica_config(tmp_path, "a", port_a, sim, redis_server, team)
    config_b = replica_config(tmp_path, "b", port_b, sim, redis_server, team)
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    with gateway_process(config_b, port_b), gateway_process(config_a, port_a) as a:
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(post, url_a) for _ in range(2)]
            deadline = time.monotonic() + 20
            while len(sim.bodies()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert live_slots(redis_server, slots) == 2
            assert live_slots(redis_server, "fg:inflight:shared") == 2
            assert post(url_b) == 429
            a.send_signal(signal.SIGKILL)
            a.wait()
            assert all(future.exception() is not None for future in held)
        deadline = time.monotonic() + 10
        while live_slots(redis_server, "fg:inflight:shared") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert live_slots(redis_server, "fg:inflight:shared") == 0
        assert live_slots(redis_server, slots) == 0
        sim.faults()
        with ThreadPoolExecutor(2) as burst:
            assert list(burst.map(post, [url_b, url_b])) == [200, 200]


def test_gateways_with_their_own_key_prefix_count_apart_on_one_redis(
    tmp_path: Path, sim: Sim, redis_server: RedisServer
) -> None:
    """Two deployments share a Redis: with `state.key_prefix` "one:" and "two:", one team name
    with `rpm = 1` gets its one request on each, and every key written starts with a prefix."""
    redis_server.flush()
    gateways = []
    for prefix in ("one:", "two:"):
        settings = gateway_settings(
            sim, tmp_path / prefix, teams=[{"name": "shared", "keys": [KEY], "rpm": 1}]
        )
        settings.state.backend = "redis"
        settings.state.redis_url = redis_server.url
        settings.state.key_prefix = prefix
        gateways.append(start_gateway(settings))
    try:
        assert [gw.post(KEY).status_code for gw in gateways] == [200, 200]
        assert [gw.post(KEY).status_code for gw in gateways] == [429, 429]
        client = redis_lib.Redis.from_url(redis_server.url)
        names = [name.decode() for name in client.keys("*")]
        client.close()
        assert {name.split(":", 1)[0] for name in names} == {"one", "two"}
    finally:
        for gw in gateways:
            gw.server.stop()
