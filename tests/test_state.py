"""The state layer: one body of tests run against memory and a real Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest

from gateway.state.base import Counters, Limits, SlotCaps, State
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState
from tests.helpers import RedisServer

NAMES = Counters("team-a", "20261125", "202611")
NO_LIMITS = Limits(None, None, None, None)


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[State]:
    if request.param == "memory":
        yield MemoryState(lease_s=30)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flush()
    backend = RedisState(server.url, lease_s=30)
    yield backend
    await backend.aclose()


async def test_rpm_admits_exactly_the_limit_under_concurrency(state: State) -> None:
    limits = Limits(5, None, None, None)
    verdicts = await asyncio.gather(*(state.admit(NAMES, f"r{i}", limits, 1, 0) for i in range(20)))
    assert sum(v.refused is None for v in verdicts) == 5
    refused = [v for v in verdicts if v.refused is not None]
    assert {v.refused for v in refused} == {"rpm"}
    assert all(0 < v.retry_after_s <= 60 for v in refused)
    assert sorted(v.remaining_requests for v in verdicts if v.refused is None) == [0, 1, 2, 3, 4]


async def test_concurrency_frees_on_settle(state: State) -> None:
    limits = Limits(None, 2, None, None)
    assert (await state.admit(NAMES, "a", limits, 1, 0)).refused is None
    assert (await state.admit(NAMES, "b", limits, 1, 0)).refused is None
    assert (await state.admit(NAMES, "c", limits, 1, 0)).refused == "concurrency"
    await state.settle(NAMES, "a", 0, 0)
    assert (await state.admit(NAMES, "c", limits, 1, 0)).refused is None


async def test_quota_and_budget_reserve_and_give_back(state: State) -> None:
    limits = Limits(None, None, 4, 100)
    assert (await state.admit(NAMES, "a", limits, 3, 60)).refused is None
    assert (await state.admit(NAMES, "b", limits, 2, 20)).refused == "images"
    assert (await state.admit(NAMES, "b", limits, 1, 60)).refused == "budget"
    await state.settle(NAMES, "a", 0, 0)
    assert (await state.admit(NAMES, "b", limits, 4, 100)).refused is None


async def test_settlement_charges_exactly_what_was_used(state: State) -> None:
    """Reserved 3 images for 90 µ$, delivered 1 that really cost 20 µ$: 1 and 20 are kept."""
    assert (await state.admit(NAMES, "a", NO_LIMITS, 3, 90)).refused is None
    assert (await state.admit(NAMES, "b", NO_LIMITS, 2, 50)).refused is None
    await state.settle(NAMES, "a", 1, 20)
    read = await state.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (1, 3, 70)
    await state.settle(NAMES, "b", 2, 65)
    read = await state.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (0, 3, 85)


async def test_a_settlement_without_its_reservation_gives_nothing_back(state: State) -> None:
    """A second settlement, or one for a request never admitted here, cannot drive the
    counters below what the other requests hold."""
    assert (await state.admit(NAMES, "a", NO_LIMITS, 2, 40)).refused is None
    await state.settle(NAMES, "stranger", 0, 0)
    await state.settle(NAMES, "a", 0, 0)
    await state.settle(NAMES, "a", 0, 0)
    read = await state.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (0, 0, 0)


async def test_a_request_settled_before_its_admission_arrived_stays_out(state: State) -> None:
    """The admission's answer was lost and the request ended (settled as unused); when the
    delayed admission runs after all, it takes no lease and reserves nothing."""
    await state.settle(NAMES, "lost", 0, 0)
    verdict = await state.admit(NAMES, "lost", Limits(None, 1, None, None), 4, 80)
    assert verdict.refused == "settled"
    read = await state.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (0, 0, 0)
    assert (await state.admit(NAMES, "next", Limits(None, 1, None, None), 1, 0)).refused is None


async def test_restart_without_persistence_keeps_the_daily_quota(
    redis_server: RedisServer,
) -> None:
    """Reserve 6 of 8, Redis restarts empty (FLUSHALL), the request settles having delivered
    nothing: the counters stay at 0, never -6, and the day then admits exactly 8 images."""
    redis_server.flush()
    backend = RedisState(redis_server.url, lease_s=30)
    limits = Limits(None, None, 8, None)
    try:
        assert (await backend.admit(NAMES, "before", limits, 6, 0)).refused is None
        redis_server.flush()
        await backend.settle(NAMES, "before", 0, 0)
        assert (await backend.counters_read(NAMES)).day_images == 0
        verdicts = [await backend.admit(NAMES, f"r{i}", limits, 1, 0) for i in range(10)]
        assert [v.refused for v in verdicts] == [None] * 8 + ["images"] * 2
        assert (await backend.counters_read(NAMES)).day_images == 8
    finally:
        await backend.aclose()


async def test_an_expired_lease_gives_its_reservation_back(state: State) -> None:
    """A killed replica's request never settles: once its lease expires, the next admission
    gives its images and money back."""
    state.lease_s = 0.3
    limits = Limits(None, None, 4, None)
    assert (await state.admit(NAMES, "dead-replica", limits, 4, 70)).refused is None
    assert (await state.admit(NAMES, "next", limits, 1, 0)).refused == "images"
    await asyncio.sleep(0.4)
    assert (await state.admit(NAMES, "next", limits, 4, 5)).refused is None
    read = await state.counters_read(NAMES)
    assert (read.in_flight, read.day_images, read.month_micros) == (1, 4, 5)


async def test_expired_lease_frees_its_slot(redis_server: RedisServer) -> None:
    redis_server.flush()
    short = RedisState(redis_server.url, lease_s=0.3)
    try:
        limits = Limits(None, 1, None, None)
        assert (await short.admit(NAMES, "dead-replica", limits, 1, 0)).refused is None
        assert (await short.admit(NAMES, "next", limits, 1, 0)).refused == "concurrency"
        await asyncio.sleep(0.4)
        assert (await short.admit(NAMES, "next", limits, 1, 0)).refused is None
    finally:
        await short.aclose()


async def test_key_acquire_prefers_the_least_busy_and_respects_caps(state: State) -> None:
    keys = ["k1", "k2"]
    caps = SlotCaps(2)
    picks = [await state.key_acquire("up", keys, "flux-2-pro", f"l{i}", caps) for i in range(5)]
    assert [p.index for p in picks] == [0, 1, 0, 1, None]
    assert picks[-1].busy
    await state.key_release("up", "k2", "flux-2-pro", "l1")
    assert (await state.key_acquire("up", keys, "flux-2-pro", "l5", caps)).index == 1
    assert await state.key_inflight("up", "k1") == 2
    assert await state.pool_inflight("up") == 4


async def test_model_cap_applies_across_the_account(state: State) -> None:
    """BFL runs 6 kontext-max jobs per account: a second key adds no kontext-max capacity."""
    keys = ["k1", "k2"]
    caps = SlotCaps(24, None, 1)
    assert (await state.key_acquire("up", keys, "flux-kontext-max", "a", caps)).index == 0
    assert (await state.key_acquire("up", keys, "flux-kontext-max", "b", caps)).busy
    assert (await state.key_acquire("up", keys, "flux-2-pro", "c", SlotCaps(24))).index == 1
    assert await state.pool_inflight("up", "flux-kontext-max") == 1
    await state.key_release("up", "k1", "flux-kontext-max", "a")
    assert (await state.key_acquire("up", keys, "flux-kontext-max", "b", caps)).index == 0


async def test_account_cap_holds_across_keys_under_concurrency(state: State) -> None:
    """`max_concurrency = 3` on a pool of two keys: of 20 concurrent acquires, 3 get a slot."""
    keys = ["k1", "k2"]
    caps = SlotCaps(24, 3)
    picks = await asyncio.gather(
        *(state.key_acquire("acct", keys, "flux-2-pro", f"l{i}", caps) for i in range(20))
    )
    won = [(i, p.index) for i, p in enumerate(picks) if p.index is not None]
    assert len(won) == 3
    assert all(p.busy for p in picks if p.index is None)
    assert await state.pool_inflight("acct") == 3
    loser, winner = next(i for i, p in enumerate(picks) if p.index is None), won[0]
    await state.key_release("acct", keys[winner[1]], "flux-2-pro", f"l{winner[0]}")
    assert await state.pool_inflight("acct") == 2
    assert (
        await state.key_acquire("acct", keys, "flux-2-pro", f"l{loser}", caps)
    ).index is not None
    assert (await state.key_acquire("acct", keys, "flux-2-pro", "one-more", caps)).busy


async def test_key_events(state: State) -> None:
    keys = ["k1", "k2"]
    status = await state.key_event("up", "k1", "rate_limited", 20, "429")
    assert status.cooldown_until > 0 and not status.disabled
    assert (await state.key_acquire("up", keys, "m", "a", SlotCaps(5))).index == 1
    await state.key_event("up", "k2", "disable", 60, "401")
    none = await state.key_acquire("up", keys, "m", "b", SlotCaps(5))
    assert none.index is None and not none.busy and 15 < none.retry_after_s <= 20
    assert not (await state.key_event("up", "k2", "claim_recheck", 60)).recheck_claimed
    await state.key_event("up", "k2", "enable")
    assert (await state.key_acquire("up", keys, "m", "c", SlotCaps(5))).index == 1
    for _ in range(3):
        status = await state.key_event("up", "k2", "failed", detail="500")
    assert status.cooldown_until > 0
    assert (await state.key_info("up", "k2"))["last_error"] == "500"


async def test_idempotency_records(state: State) -> None:
    assert await state.idem_begin("t:k", "h1") is None
    pending = await state.idem_begin("t:k", "h1")
    assert pending is not None and pending.state == "pending"
    await state.idem_finish("t:k", b'{"data": []}')
    done = await state.idem_begin("t:k", "h2")
    assert done is not None and (done.state, done.body_hash, done.response) == (
        "done",
        "h1",
        b'{"data": []}',
    )
    await state.idem_drop("t:k")
    assert await state.idem_begin("t:k", "h2") is None


async def test_usage_counters(state: State) -> None:
    await state.usage_add("t", "20261125", {"requests": 2, "images": 3})
    await state.usage_add("t", "20261125", {"requests": 1, "spend_micros": 30000})
    await state.usage_add("t", "20261126", {"errors": 1})
    got = await state.usage_get("t", ["20261124", "20261125", "20261126"])
    assert got == {
        "20261125": {"requests": 3, "images": 3, "spend_micros": 30000},
        "20261126": {"errors": 1},
    }


async def test_lock_has_one_holder_until_released(state: State) -> None:
    assert await state.lock("sweep", "replica-a", 30)
    assert not await state.lock("sweep", "replica-b", 30)
    assert await state.lock("sweep", "replica-a", 30)
    await state.unlock("sweep", "replica-b")
    assert not await state.lock("sweep", "replica-b", 30)
    await state.unlock("sweep", "replica-a")
    assert await state.lock("sweep", "replica-b", 30)


async def test_a_burst_larger_than_the_connection_pool_waits_for_connections(
    state: State,
) -> None:
    """Thousands of requests arriving at once share a bounded set of Redis connections:
    each call waits its turn instead of failing because the pool ran out."""
    burst = 1000
    await asyncio.gather(
        *(state.usage_add("burst", "20261125", {"requests": 1}) for _ in range(burst))
    )
    assert await state.usage_get("burst", ["20261125"]) == {"20261125": {"requests": burst}}


async def test_account_cap_is_exact_across_two_replicas(redis_server: RedisServer) -> None:
    """Two gateway processes, each its own client of one Redis, one account of two keys with
    `max_concurrency = 3`: of 40 concurrent acquires 3 win, and a freed slot is taken once."""
    redis_server.flush()
    replicas = [RedisState(redis_server.url, lease_s=30) for _ in range(2)]
    keys, caps = ["k1", "k2"], SlotCaps(24, 3)
    try:
        picks = await asyncio.gather(
            *(
                replicas[i % 2].key_acquire("bfl", keys, "flux-2-pro", f"l{i}", caps)
                for i in range(40)
            )
        )
        won = [i for i, p in enumerate(picks) if p.index is not None]
        assert len(won) == 3
        assert [await r.pool_inflight("bfl") for r in replicas] == [3, 3]
        first = won[0]
        key = keys[picks[first].index or 0]
        await replicas[first % 2].key_release("bfl", key, "flux-2-pro", f"l{first}")
        again = await asyncio.gather(
            *(
                replicas[i % 2].key_acquire("bfl", keys, "flux-2-pro", f"m{i}", caps)
                for i in range(10)
            )
        )
        assert sum(p.index is not None for p in again) == 1
        assert await replicas[1].pool_inflight("bfl") == 3
    finally:
        for replica in replicas:
            await replica.aclose()


async def test_key_prefixes_keep_gateways_apart(redis_server: RedisServer) -> None:
    """Two gateways on one Redis with their own `state.key_prefix`: the same team name counts
    separately, and every key either writes starts with its prefix."""
    redis_server.flush()
    one = RedisState(redis_server.url, lease_s=30, prefix="gw-one:")
    two = RedisState(redis_server.url, lease_s=30, prefix="gw-two:")
    limits = Limits(1, None, None, None)
    try:
        assert (await one.admit(NAMES, "a", limits, 1, 0)).refused is None
        assert (await one.admit(NAMES, "b", limits, 1, 0)).refused == "rpm"
        assert (await two.admit(NAMES, "c", limits, 1, 0)).refused is None
        await one.settle(NAMES, "a", 1, 10)
        await one.key_acquire("up", ["k"], "m", "l", SlotCaps(1, 1, 1))
        await one.idem_begin("t:k", "h")
        await one.usage_add("t", "20261125", {"requests": 1})
        await two.usage_add("t", "20261125", {"requests": 1})
        assert (await one.counters_read(NAMES)).month_micros == 10
        assert (await two.counters_read(NAMES)).month_micros == 0
        names = [k.decode() for k in cast(list[bytes], await one.redis.keys("*"))]
        assert names and all(n.startswith(("gw-one:", "gw-two:")) for n in names)
        assert any(n.startswith("gw-two:") for n in names)
    finally:
        await one.aclose()
        await two.aclose()
