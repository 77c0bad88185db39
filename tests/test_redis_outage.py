"""Redis stopped mid-run: `on_redis_error` decides, and the gateway recovers by itself."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.helpers import RedisServer, Sim

KEY = "sk-test-outage-0123456789"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


def gateway_on(redis: RedisServer, sim: Sim, tmp_path: Path, mode: str) -> Gateway:
    settings = gateway_settings(
        sim, tmp_path / "cache", teams=[{"name": "t", "keys": [KEY], "rpm": 100}]
    )
    settings.state.backend = "redis"
    settings.state.redis_url = redis.url
    settings.state.on_redis_error = mode  # type: ignore[assignment]
    return start_gateway(settings)


def metric(gw: Gateway, name: str) -> float:
    for line in httpx.get(f"{gw.url}/metrics").text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_fail_closed_answers_503_then_recovers(
    own_redis: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    gw = gateway_on(own_redis, sim, tmp_path, "fail-closed")
    try:
        assert gw.post(KEY).status_code == 200
        own_redis.stop()
        down = gw.post(KEY)
        assert down.status_code == 503
        assert down.json()["error"]["code"] == "state_unavailable"
        assert down.headers["retry-after"] == "1"
        assert len(sim.bodies()) == 1
        assert metric(gw, 'gateway_state_errors_total{mode="fail-closed"}') >= 1
        own_redis.start()
        assert gw.post(KEY).status_code == 200
        assert len(sim.bodies()) == 2
    finally:
        gw.server.stop()


def test_fail_open_serves_and_counts(own_redis: RedisServer, sim: Sim, tmp_path: Path) -> None:
    gw = gateway_on(own_redis, sim, tmp_path, "fail-open")
    try:
        own_redis.stop()
        answers = [gw.post(KEY) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert metric(gw, 'gateway_state_errors_total{mode="fail-open"}') >= 3
        own_redis.start()
        assert gw.post(KEY).status_code == 200
        assert len(sim.bodies()) == 4
        client = redis.Redis.from_url(own_redis.url)
        assert client.zcard("fg:rpm:t") == 1
        client.close()
    finally:
        gw.server.stop()


def test_redis_restart_under_load(own_redis: RedisServer, sim: Sim, tmp_path: Path) -> None:
    """Clients during a Redis restart get 200 or a clean 503, never a 500 or a hang."""
    gw = gateway_on(own_redis, sim, tmp_path, "fail-closed")
    statuses: list[int] = []
    try:
        with ThreadPoolExecutor(8) as pool:
            running = [pool.submit(gw.post, KEY) for _ in range(16)]
            own_redis.stop()
            running += [pool.submit(gw.post, KEY) for _ in range(16)]
            statuses += [f.result().status_code for f in running]
            own_redis.start()
            statuses_after = [f.status_code for f in pool.map(lambda _: gw.post(KEY), range(8))]
    finally:
        gw.server.stop()
    assert set(statuses) <= {200, 503}
    assert 503 in statuses
    assert statuses_after == [200] * 8


def test_redis_lost_mid_generation_keeps_the_image(
    own_redis: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    """Admitted with Redis up, finished with Redis down: the image still reaches the client."""
    gw = gateway_on(own_redis, sim, tmp_path, "fail-closed")
    sim.faults(latency=1.0)
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(gw.post, KEY)
            deadline = time.monotonic() + 20
            while not sim.bodies() and time.monotonic() < deadline:
                time.sleep(0.02)
            own_redis.stop()
            answer = running.result()
        assert answer.status_code == 200, answer.text
        assert (
            httpx.get(answer.json()["data"][0]["url"]).content
            == httpx.get(f"{sim.url}/_sim/results/{sim.results()[0]['id']}").content
        )
    finally:
        gw.server.stop()
