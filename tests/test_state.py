"""The state layer: one body of tests run against memory and a real Redis server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from gateway.errors import StateUnavailable
from gateway.metrics import Metrics
from gateway.state.admission.base import Admission, Counters, Limits, Reservation
from gateway.state.base import State
from gateway.state.connection import RedisConnection
from gateway.state.guard import Failures, guard_state
from gateway.state.keys.base import KeyChoice, KeyStatus, Slot, SlotCaps, Streak
from gateway.state.memory import memory_state
from gateway.state.redis import redis_state
from tests.helpers import RedisServer, connections_to
from tests.redis_topologies import ClusterSet, SentinelSet

NAMES = Counters("team-a", "20261125", "202611")
NO_LIMITS = Limits(None, None, None, None)
STREAK = Streak(failures=3, cooldown_s=30.0)


SERVERS = {"redis": "redis_server", "sentinel": "redis_sentinel", "cluster": "redis_cluster"}
"""The same body on one Redis, on a Sentinel-watched master and on a three-master Cluster,
where a script whose keys span slots fails."""


@pytest.fixture(params=["memory", "redis", "sentinel", "cluster"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[State]:
    if request.param == "memory":
        yield memory_state(lease_s=30)
        return
    server: RedisServer | SentinelSet | ClusterSet = request.getfixturevalue(SERVERS[request.param])
    server.flush()
    backend = redis_state(RedisConnection(server.url), lease_s=30)
    yield backend
    await backend.aclose()


def held(state: State, request_id: str, names: Counters = NAMES) -> Reservation:
    """A request's reservation on `state`, also for requests it never admitted."""
    return Reservation(names, request_id, state.backend)


def reserved(verdict: Admission) -> Reservation:
    assert verdict.reservation is not None
    return verdict.reservation


def slot(choice: KeyChoice) -> Slot:
    assert choice.slot is not None
    return choice.slot


async def test_rpm_admits_exactly_the_limit_under_concurrency(state: State) -> None:
    limits = Limits(5, None, None, None)
    verdicts = await asyncio.gather(
        *(state.admission.admit(NAMES, f"r{i}", limits, 1, 0) for i in range(20))
    )
    assert sum(v.refused is None for v in verdicts) == 5
    refused = [v for v in verdicts if v.refused is not None]
    assert {v.refused for v in refused} == {"rpm"}
    assert all(0 < v.retry_after_s <= 60 for v in refused)
    assert sorted(v.remaining_requests for v in verdicts if v.refused is None) == [0, 1, 2, 3, 4]


async def test_concurrency_frees_on_settle(state: State) -> None:
    limits = Limits(None, 2, None, None)
    assert (await state.admission.admit(NAMES, "a", limits, 1, 0)).refused is None
    assert (await state.admission.admit(NAMES, "b", limits, 1, 0)).refused is None
    assert (await state.admission.admit(NAMES, "c", limits, 1, 0)).refused == "concurrency"
    await state.admission.settle(held(state, "a"), 0, 0)
    assert (await state.admission.admit(NAMES, "c", limits, 1, 0)).refused is None


async def test_quota_and_budget_reserve_and_give_back(state: State) -> None:
    limits = Limits(None, None, 4, 100)
    assert (await state.admission.admit(NAMES, "a", limits, 3, 60)).refused is None
    assert (await state.admission.admit(NAMES, "b", limits, 2, 20)).refused == "images"
    assert (await state.admission.admit(NAMES, "b", limits, 1, 60)).refused == "budget"
    await state.admission.settle(held(state, "a"), 0, 0)
    assert (await state.admission.admit(NAMES, "b", limits, 4, 100)).refused is None


async def test_settlement_charges_exactly_what_was_used(state: State) -> None:
    """Reserved 3 images for 90 µ$, delivered 1 that really cost 20 µ$: 1 and 20 are kept."""
    assert (await state.admission.admit(NAMES, "a", NO_LIMITS, 3, 90)).refused is None
    assert (await state.admission.admit(NAMES, "b", NO_LIMITS, 2, 50)).refused is None
    await state.admission.settle(held(state, "a"), 1, 20)
    read = await state.admission.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (1, 3, 70)
    await state.admission.settle(held(state, "b"), 2, 65)
    read = await state.admission.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (0, 3, 85)


async def test_a_settlement_without_its_reservation_gives_nothing_back(state: State) -> None:
    """A second settlement, or one for a request never admitted here, cannot drive the
    counters below what the other requests hold."""
    assert (await state.admission.admit(NAMES, "a", NO_LIMITS, 2, 40)).refused is None
    await state.admission.settle(held(state, "stranger"), 0, 0)
    await state.admission.settle(held(state, "a"), 0, 0)
    await state.admission.settle(held(state, "a"), 0, 0)
    read = await state.admission.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (0, 0, 0)


async def test_a_request_settled_before_its_admission_arrived_stays_out(state: State) -> None:
    """The admission's answer was lost and the request ended (settled as unused); when the
    delayed admission runs after all, it takes no lease and reserves nothing."""
    await state.admission.settle(held(state, "lost"), 0, 0)
    verdict = await state.admission.admit(NAMES, "lost", Limits(None, 1, None, None), 4, 80)
    assert verdict.refused == "settled"
    read = await state.admission.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (0, 0, 0)
    assert (
        await state.admission.admit(NAMES, "next", Limits(None, 1, None, None), 1, 0)
    ).refused is None


async def test_restart_without_persistence_keeps_the_daily_quota(
    redis_server: RedisServer,
) -> None:
    """Reserve 6 of 8, Redis restarts empty (FLUSHALL), the request settles having delivered
    nothing: the counters stay at 0, never -6, and the day then admits exactly 8 images."""
    redis_server.flush()
    backend = redis_state(RedisConnection(redis_server.url), lease_s=30)
    counters = backend.admission
    limits = Limits(None, None, 8, None)
    try:
        before = await counters.admit(NAMES, "before", limits, 6, 0)
        assert before.refused is None
        redis_server.flush()
        await counters.settle(reserved(before), 0, 0)
        assert (await counters.counters_read(NAMES)).day_images == 0
        verdicts = [await counters.admit(NAMES, f"r{i}", limits, 1, 0) for i in range(10)]
        assert [v.refused for v in verdicts] == [None] * 8 + ["images"] * 2
        assert (await counters.counters_read(NAMES)).day_images == 8
    finally:
        await backend.aclose()


async def test_an_expired_lease_gives_its_reservation_back(state: State) -> None:
    """A killed replica's request never settles: once its lease expires, the next admission
    gives its images and money back."""
    state.admission.lease_s = 0.3
    limits = Limits(None, None, 4, None)
    assert (await state.admission.admit(NAMES, "dead-replica", limits, 4, 70)).refused is None
    assert (await state.admission.admit(NAMES, "next", limits, 1, 0)).refused == "images"
    await asyncio.sleep(0.4)
    assert (await state.admission.admit(NAMES, "next", limits, 4, 5)).refused is None
    read = await state.admission.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (1, 4, 5)


async def test_expired_lease_frees_its_slot(redis_server: RedisServer) -> None:
    redis_server.flush()
    short = redis_state(RedisConnection(redis_server.url), lease_s=0.3)
    try:
        limits = Limits(None, 1, None, None)
        counters = short.admission
        assert (await counters.admit(NAMES, "dead-replica", limits, 1, 0)).refused is None
        assert (await counters.admit(NAMES, "next", limits, 1, 0)).refused == "concurrency"
        await asyncio.sleep(0.4)
        assert (await counters.admit(NAMES, "next", limits, 1, 0)).refused is None
    finally:
        await short.aclose()


async def test_key_acquire_prefers_the_least_busy_and_respects_caps(state: State) -> None:
    keys = ["k1", "k2"]
    caps = SlotCaps(2)
    picks = [
        await state.keys.key_acquire("up", keys, "flux-2-pro", f"l{i}", caps) for i in range(5)
    ]
    assert [p.index for p in picks] == [0, 1, 0, 1, None]
    assert picks[-1].busy
    await state.keys.key_release(slot(picks[1]))
    assert (await state.keys.key_acquire("up", keys, "flux-2-pro", "l5", caps)).index == 1
    assert await state.keys.key_inflight("up", "k1") == 2
    assert await state.keys.pool_inflight("up") == 4


async def test_model_cap_applies_across_the_account(state: State) -> None:
    """BFL runs 6 kontext-max jobs per account: a second key adds no kontext-max capacity."""
    keys = ["k1", "k2"]
    caps = SlotCaps(24, None, 1)
    first = await state.keys.key_acquire("up", keys, "flux-kontext-max", "a", caps)
    assert first.index == 0
    assert (await state.keys.key_acquire("up", keys, "flux-kontext-max", "b", caps)).busy
    assert (await state.keys.key_acquire("up", keys, "flux-2-pro", "c", SlotCaps(24))).index == 1
    assert await state.keys.pool_inflight("up", "flux-kontext-max") == 1
    await state.keys.key_release(slot(first))
    assert (await state.keys.key_acquire("up", keys, "flux-kontext-max", "b", caps)).index == 0


async def test_account_cap_holds_across_keys_under_concurrency(state: State) -> None:
    """`max_concurrency = 3` on a pool of two keys: of 20 concurrent acquires, 3 get a slot."""
    keys = ["k1", "k2"]
    caps = SlotCaps(24, 3)
    picks = await asyncio.gather(
        *(state.keys.key_acquire("acct", keys, "flux-2-pro", f"l{i}", caps) for i in range(20))
    )
    won = [(i, p.index) for i, p in enumerate(picks) if p.index is not None]
    assert len(won) == 3
    assert all(p.busy for p in picks if p.index is None)
    assert await state.keys.pool_inflight("acct") == 3
    loser, winner = next(i for i, p in enumerate(picks) if p.index is None), won[0]
    assert slot(picks[winner[0]]).key == keys[winner[1]]
    await state.keys.key_release(slot(picks[winner[0]]))
    assert await state.keys.pool_inflight("acct") == 2
    assert (
        await state.keys.key_acquire("acct", keys, "flux-2-pro", f"l{loser}", caps)
    ).index is not None
    assert (await state.keys.key_acquire("acct", keys, "flux-2-pro", "one-more", caps)).busy


async def test_key_events(state: State) -> None:
    keys = ["k1", "k2"]
    status = await state.keys.key_event("up", "k1", "rate_limited", STREAK, 20, "429")
    assert status.cooldown_until > 0 and not status.disabled
    assert (await state.keys.key_acquire("up", keys, "m", "a", SlotCaps(5))).index == 1
    await state.keys.key_event("up", "k2", "disable", STREAK, 60, "401")
    none = await state.keys.key_acquire("up", keys, "m", "b", SlotCaps(5))
    assert none.index is None and not none.busy and 15 < none.retry_after_s <= 20
    assert not await state.keys.key_claim_recheck("up", "k2", 60)
    await state.keys.key_event("up", "k2", "enable", STREAK)
    assert (await state.keys.key_acquire("up", keys, "m", "c", SlotCaps(5))).index == 1
    for _ in range(3):
        status = await state.keys.key_event("up", "k2", "failed", STREAK, detail="500")
    assert status.cooldown_until > 0
    assert (await state.keys.key_status("up", "k2")).last_error == "500"


async def test_idempotency_records(state: State) -> None:
    assert await state.idempotency.idem_begin("t:k", "h1") is None
    pending = await state.idempotency.idem_begin("t:k", "h1")
    assert pending is not None and pending.state == "pending"
    await state.idempotency.idem_finish("t:k", b'{"data": []}')
    done = await state.idempotency.idem_begin("t:k", "h2")
    assert done is not None and (done.state, done.body_hash, done.response) == (
        "done",
        "h1",
        b'{"data": []}',
    )
    await state.idempotency.idem_drop("t:k")
    assert await state.idempotency.idem_begin("t:k", "h2") is None


async def test_usage_counters(state: State) -> None:
    await state.usage.usage_add("t", "20261125", {"requests": 2, "images": 3})
    await state.usage.usage_add("t", "20261125", {"requests": 1, "spend_micros": 30000})
    await state.usage.usage_add("t", "20261126", {"errors": 1})
    got = await state.usage.usage_get("t", ["20261124", "20261125", "20261126"])
    assert got == {
        "20261125": {"requests": 3, "images": 3, "spend_micros": 30000},
        "20261126": {"errors": 1},
    }


async def test_lock_has_one_holder_until_released(state: State) -> None:
    assert await state.locks.lock("sweep", "replica-a", 30)
    assert not await state.locks.lock("sweep", "replica-b", 30)
    assert await state.locks.lock("sweep", "replica-a", 30)
    await state.locks.unlock("sweep", "replica-b")
    assert not await state.locks.lock("sweep", "replica-b", 30)
    await state.locks.unlock("sweep", "replica-a")
    assert await state.locks.lock("sweep", "replica-b", 30)


async def test_a_burst_larger_than_the_connection_pool_waits_for_connections(
    state: State,
) -> None:
    """Thousands of requests arriving at once share a bounded set of Redis connections:
    each call waits its turn instead of failing because the pool ran out."""
    burst = 1000
    await asyncio.gather(
        *(state.usage.usage_add("burst", "20261125", {"requests": 1}) for _ in range(burst))
    )
    assert await state.usage.usage_get("burst", ["20261125"]) == {"20261125": {"requests": burst}}


async def test_a_call_under_way_when_the_state_closes_leaves_no_connection_open(
    tmp_path: Path,
) -> None:
    """At shutdown a request the server cancelled may still be settling while the state
    closes: its call is let finish, then its new connection is closed with the others."""
    server = RedisServer(tmp_path).start()
    try:
        conn = RedisConnection(server.url)
        settling = asyncio.create_task(conn.now_ms())
        await asyncio.sleep(0)  # the call has begun: it is opening its connection
        await conn.aclose()
        assert await settling > 0
        assert connections_to(server.port) == 0
    finally:
        server.stop()


async def test_account_cap_is_exact_across_two_replicas(redis_server: RedisServer) -> None:
    """Two gateway processes, each its own client of one Redis, one account of two keys with
    `max_concurrency = 3`: of 40 concurrent acquires 3 win, and a freed slot is taken once."""
    redis_server.flush()
    replicas = [redis_state(RedisConnection(redis_server.url), lease_s=30) for _ in range(2)]
    keys, caps = ["k1", "k2"], SlotCaps(24, 3)
    try:
        picks = await asyncio.gather(
            *(
                replicas[i % 2].keys.key_acquire("bfl", keys, "flux-2-pro", f"l{i}", caps)
                for i in range(40)
            )
        )
        won = [i for i, p in enumerate(picks) if p.index is not None]
        assert len(won) == 3
        assert [await r.keys.pool_inflight("bfl") for r in replicas] == [3, 3]
        first = won[0]
        assert slot(picks[first]).key == keys[picks[first].index or 0]
        await replicas[first % 2].keys.key_release(slot(picks[first]))
        again = await asyncio.gather(
            *(
                replicas[i % 2].keys.key_acquire("bfl", keys, "flux-2-pro", f"m{i}", caps)
                for i in range(10)
            )
        )
        assert sum(p.index is not None for p in again) == 1
        assert await replicas[1].keys.pool_inflight("bfl") == 3
    finally:
        for replica in replicas:
            await replica.aclose()


async def test_key_prefixes_keep_gateways_apart(redis_server: RedisServer) -> None:
    """Two gateways on one Redis with their own `state.key_prefix`: the same team name counts
    separately, and every key either writes starts with its prefix."""
    redis_server.flush()
    link = RedisConnection(redis_server.url, prefix="gw-one:")
    one = redis_state(link, lease_s=30)
    two = redis_state(RedisConnection(redis_server.url, prefix="gw-two:"), lease_s=30)
    limits = Limits(1, None, None, None)
    try:
        a = await one.admission.admit(NAMES, "a", limits, 1, 0)
        assert a.refused is None
        assert (await one.admission.admit(NAMES, "b", limits, 1, 0)).refused == "rpm"
        assert (await two.admission.admit(NAMES, "c", limits, 1, 0)).refused is None
        await one.admission.settle(reserved(a), 1, 10)
        await one.keys.key_acquire("up", ["k"], "m", "l", SlotCaps(1, 1, 1))
        await one.idempotency.idem_begin("t:k", "h")
        await one.usage.usage_add("t", "20261125", {"requests": 1})
        await two.usage.usage_add("t", "20261125", {"requests": 1})
        assert (await one.admission.counters_read(NAMES)).month_micros == 10
        assert (await two.admission.counters_read(NAMES)).month_micros == 0
        names = [k.decode() for k in cast(list[bytes], await link.redis.keys("*"))]
        assert names and all(n.startswith(("gw-one:", "gw-two:")) for n in names)
        assert any(n.startswith("gw-two:") for n in names)
    finally:
        await one.aclose()
        await two.aclose()


async def test_key_status_reads_seconds_from_every_backend(state: State) -> None:
    """Times come back as epoch seconds on both backends; a fresh key has none."""
    assert await state.keys.key_status("up", "fresh") == KeyStatus(False, 0.0, 0.0, None)
    before = time.time()
    await state.keys.key_event("up", "k1", "rate_limited", STREAK, 20, "429")
    await state.keys.key_event("up", "k1", "disable", STREAK, 60, "401")
    status = await state.keys.key_status("up", "k1")
    assert (status.disabled, status.last_error) == (True, "401")
    assert before + 19 < status.cooldown_until < before + 21 + 5
    assert before + 59 < status.recheck_at < before + 61 + 5


def errors_counted(metrics: Metrics, mode: str) -> float:
    value = metrics.registry.get_sample_value("gateway_state_errors_total", {"mode": mode})
    return value or 0.0


async def test_fail_open_settles_where_it_reserved(tmp_path: Path) -> None:
    """Redis down: the fallback admits (one failure counted). Redis back: the settlement and
    the renewal of that reservation go to the fallback, which alone can give it back."""
    server = RedisServer(tmp_path).start()
    metrics = Metrics()
    primary = redis_state(RedisConnection(server.url, timeout_s=0.5), lease_s=30)
    fallback = memory_state(lease_s=30)
    state = guard_state(primary, fallback, Failures(True, metrics))
    try:
        server.stop()
        verdict = await state.admission.admit(NAMES, "down", Limits(None, 1, None, None), 2, 40)
        assert reserved(verdict).backend == "memory"
        assert errors_counted(metrics, "fail-open") == 1
        server.start()
        await state.admission.renew([reserved(verdict)])
        await state.admission.settle(reserved(verdict), 1, 10)
        assert errors_counted(metrics, "fail-open") == 1
        read = await fallback.admission.counters_read(NAMES)
        assert (read.in_flight, read.day_images, read.month_micros) == (0, 1, 10)
        read = await primary.admission.counters_read(NAMES)
        assert (read.in_flight, read.day_images, read.month_micros) == (0, 0, 0)
        up = await state.admission.admit(NAMES, "up", NO_LIMITS, 1, 0)
        assert reserved(up).backend == "redis"
    finally:
        await state.aclose()
        server.stop()


async def test_fail_closed_answers_state_unavailable(tmp_path: Path) -> None:
    server = RedisServer(tmp_path).start()
    metrics = Metrics()
    primary = redis_state(RedisConnection(server.url, timeout_s=0.5), lease_s=30)
    state = guard_state(primary, memory_state(lease_s=30), Failures(False, metrics))
    try:
        server.stop()
        with pytest.raises(StateUnavailable) as refused:
            await state.keys.key_acquire("up", ["k"], "m", "l", SlotCaps(1))
        assert (refused.value.status, refused.value.code) == (503, "state_unavailable")
        assert refused.value.headers == {"retry-after": "1"}
        assert errors_counted(metrics, "fail-closed") == 1
        assert not await state.ping()
    finally:
        await state.aclose()
