"""The state on a Sentinel-watched master: a failover costs a few seconds of clean 503s, then
every limit is exact again, without a restart; a lease whose release was lost expires."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.config_report import report
from gateway.errors import StateUnavailable
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.state.admission.base import Counters, Limits, Reservation
from gateway.state.base import State
from gateway.state.budget import request_budget
from gateway.state.connection import MAX_CONNECTIONS, RedisConnection
from gateway.state.guard import Failures, guard_state
from gateway.state.memory import memory_state
from gateway.state.redis import redis_state
from gateway.state.sentinel import SafeSentinel
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.helpers import Sim, free_port
from tests.redis_topologies import MASTER, SentinelSet

TIMEOUT_S = 1.0
KEY = "sk-test-sentinel-0123456789"
NAMES = Counters("team-s", "20261125", "202611")
MAX_CALLS = 400
"""Bound on calls while waiting out a failover (they end sooner: promotion takes seconds)."""


def fail_closed(url: str, lease_s: float) -> State:
    primary = redis_state(RedisConnection(url, timeout_s=TIMEOUT_S), lease_s=lease_s)
    return guard_state(primary, memory_state(lease_s), Failures(False, Metrics()))


async def timed_admit(state: State, request_id: str, limits: Limits) -> tuple[str, float]:
    """One admission as a request makes it (within its state budget): verdict and seconds."""
    started = time.monotonic()
    try:
        with request_budget(TIMEOUT_S):
            verdict = await state.admission.admit(NAMES, request_id, limits, 1, 0)
        outcome = verdict.refused or "ok"
    except StateUnavailable as exc:
        assert (exc.status, exc.code, exc.headers) == (
            503,
            "state_unavailable",
            {"retry-after": "1"},
        )
        outcome = "503"
    return outcome, time.monotonic() - started


async def test_a_failover_answers_503_in_time_then_admits_and_a_lost_release_expires(
    tmp_path: Path,
) -> None:
    """Admitted and replicated, then the master is SIGKILLed before the settlement: calls
    get 503 within the state timeout until the replica is promoted, then admit again; the
    lease whose settlement was lost still holds the one concurrency slot, until it expires."""
    setup = SentinelSet(tmp_path).start()
    lease_s = 8.0
    state = fail_closed(setup.url, lease_s)
    one = Limits(None, 1, None, None)
    try:
        assert (await timed_admit(state, "before", one))[0] == "ok"
        setup.wait_replicated()
        old = setup.kill_master()
        with pytest.raises(StateUnavailable):
            await state.admission.settle(Reservation(NAMES, "before", "redis"), 1, 0)
        outcomes: list[tuple[str, float]] = []
        for i in range(MAX_CALLS):
            outcomes.append(await timed_admit(state, f"during-{i}", one))
            if outcomes[-1][0] != "503":
                break
            await asyncio.sleep(0.05)  # paced load, not synchronisation
        assert setup.wait_promoted(old) != old
        verdicts = [outcome for outcome, _ in outcomes]
        assert verdicts[0] == "503" and set(verdicts[:-1]) == {"503"}
        assert verdicts[-1] == "concurrency"  # the replicated lease of "before" survived
        assert max(seconds for _, seconds in outcomes) <= TIMEOUT_S + 0.5
        for i in range(MAX_CALLS):
            outcome, _ = await timed_admit(state, f"after-{i}", one)
            if outcome != "concurrency":
                break
            await asyncio.sleep(0.1)  # waiting out the lease's expiry time: no event marks it
        assert outcome == "ok"
        read = await state.admission.counters_read(NAMES)
        assert read.in_flight == 1
    finally:
        await state.aclose()
        setup.stop()


def post(gateway: Gateway) -> tuple[int, str, str | None, float, str | None]:
    """(status, error code, retry-after, seconds, x-ratelimit-remaining-requests)."""
    started = time.monotonic()
    reply = httpx.post(
        f"{gateway.url}/v1/images/generations",
        headers={"authorization": f"Bearer {KEY}"},
        json={"model": "flux-2-pro", "prompt": "x", "response_format": "b64_json"},
        timeout=60,
    )
    seconds = time.monotonic() - started
    code = reply.json()["error"]["code"] if reply.status_code != 200 else ""
    return (
        reply.status_code,
        code,
        reply.headers.get("retry-after"),
        seconds,
        reply.headers.get("x-ratelimit-remaining-requests"),
    )


def replicas(sim: Sim, tmp_path: Path, url: str, team: dict[str, object]) -> list[Gateway]:
    started = []
    for name in ("a", "b"):
        settings = gateway_settings(
            sim,
            tmp_path / name,
            teams=[{"name": "ha", "keys": [KEY], **team}],
            state={"backend": "redis", "redis_url": url, "timeout_s": TIMEOUT_S, "lease_s": 2},
        )
        started.append(start_gateway(settings))
    return started


def test_two_replicas_through_a_failover_stay_exact(sim: Sim, tmp_path: Path) -> None:
    """Two gateways on the Sentinel set-up under a bounded load; the master is SIGKILLed.
    Every answer is a 200 or a clean 503 within the state timeout plus the request's own time;
    after the promotion the team's rpm counts down across both replicas with no gap or repeat,
    and its concurrency admits exactly `max_concurrency`."""
    setup = SentinelSet(tmp_path / "redis").start()
    gateways = replicas(sim, tmp_path, setup.url, {"rpm": 5000, "max_concurrency": 3})
    stop = threading.Event()
    answers: list[tuple[int, str, str | None, float, str | None]] = []

    def load(worker: int) -> None:
        for i in range(MAX_CALLS // 4):
            if stop.is_set():
                return
            answers.append(post(gateways[(worker + i) % 2]))

    try:
        warm = [post(gateways[i % 2]) for i in range(6)]
        assert [a[0] for a in warm] == [200] * 6
        own_s = max(a[3] for a in warm)
        with ThreadPoolExecutor(2) as pool:
            workers = [pool.submit(load, w) for w in range(2)]
            while len(answers) < 10:
                time.sleep(0.01)  # let the load get going: paced, not synchronisation
            old = setup.kill_master()
            setup.wait_promoted(old)
            seen = len(answers)
            while len(answers) < seen + 10 and not all(w.done() for w in workers):
                time.sleep(0.01)
            stop.set()
            for worker in workers:
                worker.result()
        statuses = [a[0] for a in answers]
        assert set(statuses) == {200, 503}
        refused = [a for a in answers if a[0] == 503]
        assert {(a[1], a[2]) for a in refused} == {("state_unavailable", "1")}
        assert max(a[3] for a in answers) <= TIMEOUT_S + own_s + 1.0
        assert statuses[-4:] == [200] * 4
        time.sleep(2.5)  # leases whose settlement was lost in the failover expire (lease_s 2)
        remaining = [int(post(gateways[i % 2])[4] or -1) for i in range(8)]
        assert remaining == list(range(remaining[0], remaining[0] - 8, -1))
        sim.faults(latency=2.0)
        with ThreadPoolExecutor(8) as burst:
            statuses = list(burst.map(lambda i: post(gateways[i % 2])[0], range(8)))
        assert sorted(statuses) == [200] * 3 + [429] * 5
    finally:
        stop.set()
        for gateway in gateways:
            gateway.server.stop()
        setup.stop()


def test_check_config_shows_the_sentinel_set_with_passwords_masked() -> None:
    settings = Settings(
        state={
            "backend": "redis",
            "redis_url": "redis+sentinel://app:s3cret@10.0.0.1:26379,10.0.0.2/gw/2"
            "?sentinel_password=t0ken",
        }
    )
    text, _ = report(settings)
    assert "s3cret" not in text and "t0ken" not in text
    assert (
        '"redis_url": "redis+sentinel://app:***@10.0.0.1:26379,10.0.0.2/gw/2'
        '?sentinel_password=***"' in text
    )
    assert orjson.loads(text)["state"]["redis_topology"] == {
        "kind": "sentinel",
        "nodes": ["10.0.0.1:26379", "10.0.0.2:26379"],
        "tls": False,
        "master": "gw",
        "db": 2,
    }


async def test_discoveries_at_once_keep_every_sentinel(redis_sentinel: SentinelSet) -> None:
    """A burst of new connections (as many as the pool holds) asks for the master all at once,
    here past a sentinel that is down: each finds the master, and every sentinel, the dead one
    too, stays on the list (redis-py's own reordering dropped one, with the connections it
    held open)."""
    dead = ("127.0.0.1", free_port())
    nodes = [dead, *(("127.0.0.1", port) for port in redis_sentinel.sentinel_ports)]
    sentinel = SafeSentinel(nodes, sentinel_kwargs={"socket_timeout": TIMEOUT_S})
    clients = {id(client) for client in sentinel.sentinels}
    try:
        found = await asyncio.gather(
            *(sentinel.discover_master(MASTER) for _ in range(MAX_CONNECTIONS))
        )
        assert set(found) == {("127.0.0.1", redis_sentinel.master())}
        assert {id(client) for client in sentinel.sentinels} == clients
    finally:
        await sentinel.aclose()
