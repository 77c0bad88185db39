"""The state on a three-master Redis Cluster: each team's (and each key pool's) keys share
one slot, teams spread over the masters, and limits are exact across two replicas."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.errors import StateUnavailable
from gateway.state.connection import RedisConnection
from tests.conftest import gateway_settings, start_gateway
from tests.helpers import Sim
from tests.redis_topologies import ClusterSet, keyslot

TEAMS = {"design": "sk-test-cluster-design-0123", "research": "sk-test-cluster-research-01"}


async def test_each_teams_keys_share_a_slot_and_teams_spread_over_masters(
    redis_cluster: ClusterSet,
) -> None:
    conn = RedisConnection(redis_cluster.url)
    await conn.aclose()
    slots = {
        team: {
            keyslot(conn.key(kind, team, *rest))
            for kind, rest in [("rpm", ()), ("inflight", ()), ("images", ("20261125",))]
        }
        for team in TEAMS
    }
    assert slots == {"design": {8372}, "research": {11833}}
    owners = {redis_cluster.owner(slot) for (slot,) in slots.values()}
    assert len(owners) == 2
    assert conn.key("rpm", "design") == "fg:rpm:{design}"


async def test_a_script_whose_keys_span_slots_is_refused(redis_cluster: ClusterSet) -> None:
    """The guard the whole state body relies on: keys of two owners in one script fail."""
    conn = RedisConnection(redis_cluster.url)
    lock = conn.script("lock")
    try:
        keys = [conn.key("lock", "design"), conn.key("lock", "research")]
        with pytest.raises(StateUnavailable):
            await conn.run(lock, keys, ["owner", 1000])
        assert await conn.run(lock, keys[:1], ["owner", 1000]) == 1
    finally:
        await conn.aclose()


def post(url: str, key: str) -> tuple[int, str | None]:
    reply = httpx.post(
        f"{url}/v1/images/generations",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "flux-2-pro", "prompt": "x", "response_format": "b64_json"},
        timeout=60,
    )
    return reply.status_code, reply.headers.get("x-ratelimit-remaining-requests")


def test_limits_are_exact_across_two_replicas_on_a_cluster(
    sim: Sim, tmp_path: Path, redis_cluster: ClusterSet
) -> None:
    """Two teams on different masters, `rpm = 5` each, requests alternating between the two
    replicas: each team's remaining count goes 4..0 with no gap or repeat, then 429; with
    `max_concurrency = 2` and slow generations, 2 of 6 concurrent requests per team pass."""
    redis_cluster.flush()
    teams = [
        {"name": name, "keys": [key], "rpm": 5, "max_concurrency": 2} for name, key in TEAMS.items()
    ]
    gateways = [
        start_gateway(
            gateway_settings(
                sim,
                tmp_path / name,
                teams=teams,
                state={"backend": "redis", "redis_url": redis_cluster.url, "lease_s": 5},
            )
        )
        for name in ("a", "b")
    ]
    urls = itertools.cycle([gw.url for gw in gateways])
    try:
        answers: dict[str, list[tuple[int, str | None]]] = {team: [] for team in TEAMS}
        for _ in range(7):
            for team, key in TEAMS.items():
                answers[team].append(post(next(urls), key))
        for mine in answers.values():
            assert [s for s, _ in mine] == [200] * 5 + [429] * 2
            assert [r for s, r in mine if s == 200] == ["4", "3", "2", "1", "0"]
        redis_cluster.flush()
        sim.faults(latency=2.0)
        jobs = [(next(urls), key) for key in TEAMS.values() for _ in range(6)]
        with ThreadPoolExecutor(12) as pool:
            statuses = [s for s, _ in pool.map(lambda job: post(*job), jobs)]
        assert sorted(statuses[:6]) == sorted(statuses[6:]) == [200] * 2 + [429] * 4
    finally:
        for gateway in gateways:
            gateway.server.stop()
