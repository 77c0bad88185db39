"""The state layer: one body of tests run against memory and a real Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.state.base import Counters, Limits, State
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
    await state.settle(NAMES, "a", 3, 60)
    assert (await state.admit(NAMES, "b", limits, 4, 100)).refused is None


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
    picks = [await state.key_acquire("up", keys, "flux-2-pro", f"l{i}", 2, None) for i in range(5)]
    assert [p.index for p in picks] == [0, 1, 0, 1, None]
    assert picks[-1].busy
    await state.key_release("up", "k2", "flux-2-pro", "l1")
    assert (await state.key_acquire("up", keys, "flux-2-pro", "l5", 2, None)).index == 1
    assert await state.key_inflight("up", "k1") == 2


async def test_model_cap_applies_per_key(state: State) -> None:
    keys = ["k1"]
    assert (await state.key_acquire("up", keys, "flux-kontext-max", "a", 24, 1)).index == 0
    assert (await state.key_acquire("up", keys, "flux-kontext-max", "b", 24, 1)).busy
    assert (await state.key_acquire("up", keys, "flux-2-pro", "c", 24, None)).index == 0


async def test_key_events(state: State) -> None:
    keys = ["k1", "k2"]
    status = await state.key_event("up", "k1", "rate_limited", 20, "429")
    assert status.cooldown_until > 0 and not status.disabled
    assert (await state.key_acquire("up", keys, "m", "a", 5, None)).index == 1
    await state.key_event("up", "k2", "disable", 60, "401")
    none = await state.key_acquire("up", keys, "m", "b", 5, None)
    assert none.index is None and not none.busy and 15 < none.retry_after_s <= 20
    assert not (await state.key_event("up", "k2", "claim_recheck", 60)).recheck_claimed
    await state.key_event("up", "k2", "enable")
    assert (await state.key_acquire("up", keys, "m", "c", 5, None)).index == 1
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
