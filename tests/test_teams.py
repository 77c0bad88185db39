"""Team limits through the gateway, with memory and with Redis state."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway, Launch, gateway_settings
from tests.helpers import Sim

KEY = "sk-test-limits-0123456789"
Make = Callable[..., Gateway]


@pytest.fixture
def make_gateway(launch: Launch, sim: Sim, tmp_path: Path) -> Make:
    serial = itertools.count()

    def make(**team: Any) -> Gateway:
        settings = gateway_settings(
            sim,
            tmp_path / f"cache{next(serial)}",
            teams=[{"name": "limited", "keys": [KEY], **team}],
        )
        return launch(settings)

    return make


def test_rpm_headers_and_429(make_gateway: Make, sim: Sim) -> None:
    gw = make_gateway(rpm=3)
    answers = [gw.post(KEY) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
    assert {a.headers["x-ratelimit-limit-requests"] for a in answers} == {"3"}
    refused = answers[-1]
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert len(sim.bodies()) == 3


def test_concurrency_cap(make_gateway: Make, sim: Sim) -> None:
    gw = make_gateway(max_concurrency=2)
    sim.faults(latency=3.0)
    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(a.status_code for a in pool.map(lambda _: gw.post(KEY), range(6)))
    assert statuses == [200, 200, 429, 429, 429, 429]
    assert len(sim.bodies()) == 2
    sim.faults()
    assert gw.post(KEY).status_code == 200


def test_daily_images_quota_counts_only_delivered(make_gateway: Make, sim: Sim) -> None:
    gw = make_gateway(images_per_day=3)
    assert gw.post(KEY, prompt="this is forbidden").status_code == 400
    assert gw.post(KEY, n=2).status_code == 200
    over = gw.post(KEY, n=2)
    assert over.status_code == 429
    assert over.json()["error"] == {
        "message": "Your team's daily image quota is used up.",
        "type": "insufficient_quota",
        "param": None,
        "code": "insufficient_quota",
    }
    assert gw.post(KEY, n=1).status_code == 200
    assert gw.post(KEY, n=1).status_code == 429


def test_budget_and_failed_jobs_cost_nothing(make_gateway: Make, sim: Sim) -> None:
    gw = make_gateway(monthly_budget_usd=0.09)
    sim.faults(fail_status=500, fail_count=1)
    assert gw.post(KEY).status_code == 502
    assert gw.post(KEY, n=3).status_code == 200
    assert gw.post(KEY).json()["error"]["code"] == "insufficient_quota"


def test_idempotency_key_replays_the_first_answer(make_gateway: Make, sim: Sim) -> None:
    gw = make_gateway()
    headers = {"authorization": f"Bearer {KEY}", "idempotency-key": "order-42"}
    body = {"model": "flux-2-pro", "prompt": "once"}
    sim.faults(latency=0.5)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        answer = httpx.post(
            f"{gw.url}/v1/images/generations", headers=headers, json=body, timeout=60
        )
        with lock:
            results.append(answer)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    later = httpx.post(f"{gw.url}/v1/images/generations", headers=headers, json=body, timeout=60)
    results.append(later)
    assert [r.status_code for r in results] == [200] * 4
    assert len({r.json()["data"][0]["url"] for r in results}) == 1
    assert len(sim.bodies()) == 1
    assert later.headers["x-idempotent-replay"] == "true"
    conflict = httpx.post(
        f"{gw.url}/v1/images/generations",
        headers=headers,
        json={**body, "prompt": "other"},
        timeout=60,
    )
    assert conflict.status_code == 409
    assert conflict.json()["error"]["param"] == "Idempotency-Key"
    assert len(sim.bodies()) == 1
