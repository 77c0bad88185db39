"""A stalled Redis (SIGSTOP): nothing refused, nothing answered. Requests stay bounded, nothing
is sent twice, and an admission whose answer was lost leaves no ghost lease behind."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from gateway.errors import StateUnavailable
from gateway.state.admission.base import Counters, Limits, Reservation
from gateway.state.admission.redis import RedisAdmission
from gateway.state.budget import BudgetSpent, request_budget
from gateway.state.connection import RedisConnection
from gateway.state.keys.base import Slot, SlotCaps
from gateway.state.keys.redis import RedisKeySlots
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.helpers import RedisServer, Sim

KEY = "sk-test-stall-0123456789"
NAMES = Counters("t", "20261125", "202611")
LIMITS = Limits(None, 2, None, None)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    if server.process is not None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


@contextmanager
def stalled(server: RedisServer) -> Iterator[None]:
    """The Redis process paused: connections are accepted by the kernel, nothing is answered."""
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


async def outcome(call: object) -> str:
    try:
        await call  # type: ignore[misc]
    except BudgetSpent:
        return "not sent"
    except StateUnavailable:
        return "timed out"
    return "answered"


async def test_a_request_waits_its_budget_once_then_sends_nothing(own_redis: RedisServer) -> None:
    """Per-call timeout 0.3 s, budget 0.5 s: the admission waits 0.3 s, the next call the 0.2 s
    left, and every call after that fails at once without being sent."""
    backend = RedisConnection(own_redis.url, timeout_s=0.3)
    counters, slots = RedisAdmission(backend, lease_s=30), RedisKeySlots(backend, lease_s=30)
    try:
        assert await backend.ping()
        with stalled(own_redis), request_budget(0.5) as budget:
            got = [
                await outcome(counters.admit(NAMES, "r1", LIMITS, 1, 0)),
                await outcome(slots.key_acquire("up", ["k"], "m", "l1", SlotCaps(4))),
                await outcome(slots.key_release(Slot("up", "k", "m", "l1", "redis"))),
                await outcome(counters.settle(Reservation(NAMES, "r1", "redis"), 0, 0)),
            ]
            assert budget.left <= 0
        assert got == ["timed out", "timed out", "not sent", "not sent"]
    finally:
        await backend.aclose()


async def test_an_admission_whose_answer_was_lost_leaves_no_lease(own_redis: RedisServer) -> None:
    """The admission reaches the paused Redis and runs once it resumes, but its answer was lost:
    the settlement sent after it frees the lease and the reservation, without waiting for the
    lease (30 s) to expire; the team's whole concurrency is there again."""
    backend = RedisConnection(own_redis.url, timeout_s=0.3)
    counters = RedisAdmission(backend, lease_s=30)
    try:
        assert await backend.ping()
        with stalled(own_redis):
            for request_id in ("lost-1", "lost-2"):
                with request_budget(0.3):
                    assert await outcome(counters.admit(NAMES, request_id, LIMITS, 3, 50)) == (
                        "timed out"
                    )
        await backend.cleanups_sent(timeout_s=10)
        read = await counters.counters_read(NAMES)
        assert (read.in_flight, read.day_images, read.month_micros) == (0, 0, 0)
        verdicts = [await counters.admit(NAMES, f"next-{i}", LIMITS, 1, 0) for i in range(3)]
        assert [v.refused for v in verdicts] == [None, None, "concurrency"]
    finally:
        await backend.aclose()


def live_leases(server: RedisServer, team: str) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        seconds, micros = client.time()
        return int(client.zcount(f"fg:inflight:{team}", seconds * 1000 + micros // 1000, "+inf"))
    finally:
        client.close()


def timed_post(gw: Gateway) -> tuple[int, str | None, float]:
    started = time.monotonic()
    answer = gw.post(KEY)
    code = answer.json()["error"]["code"] if answer.status_code != 200 else None
    return answer.status_code, code, time.monotonic() - started


def test_a_stalled_redis_answers_every_request_and_leaves_no_ghost_lease(
    own_redis: RedisServer, sim: Sim, tmp_path: Path
) -> None:
    settings = gateway_settings(
        sim, tmp_path / "cache", teams=[{"name": "t", "keys": [KEY], "max_concurrency": 2}]
    )
    settings.state.backend = "redis"
    settings.state.redis_url = own_redis.url
    settings.state.timeout_s = 0.5
    settings.state.lease_s = 30
    gw = start_gateway(settings)
    try:
        assert gw.post(KEY).status_code == 200
        with stalled(own_redis), ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: timed_post(gw), range(16)))
        assert {(status, code) for status, code, _ in answers} <= {
            (503, "state_unavailable"),
            (200, None),
        }
        deadline = time.monotonic() + 10
        while live_leases(own_redis, "t") and time.monotonic() < deadline:
            time.sleep(0.05)
        client = redis.Redis.from_url(own_redis.url)
        assert client.hlen("fg:resv:t") == 0
        client.close()
        assert live_leases(own_redis, "t") == 0
        sim.faults(latency=1.0)
        with ThreadPoolExecutor(3) as pool:
            statuses = sorted(pool.map(lambda _: gw.post(KEY).status_code, range(3)))
        assert statuses == [200, 200, 429]
    finally:
        gw.server.stop()
