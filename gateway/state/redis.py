"""Redis state: every limit exact across replicas, all abilities on one connection pool."""

from __future__ import annotations

from gateway.state.admission.redis import RedisAdmission
from gateway.state.base import State
from gateway.state.connection import RedisConnection
from gateway.state.deliveries.redis import RedisDeliveries
from gateway.state.idempotency.redis import RedisIdempotency
from gateway.state.jobs.redis import RedisJobs
from gateway.state.keys.redis import RedisKeySlots
from gateway.state.locks.redis import RedisLocks
from gateway.state.records.redis import RedisListings, RedisUsage


def redis_state(conn: RedisConnection, lease_s: float = 30.0) -> State:
    return State(
        "redis",
        RedisAdmission(conn, lease_s),
        RedisKeySlots(conn, lease_s),
        RedisIdempotency(conn),
        RedisUsage(conn),
        RedisListings(conn),
        RedisLocks(conn),
        RedisJobs(conn),
        RedisDeliveries(conn),
        conn,
    )
