"""Redis state: every limit exact across replicas, each admission one atomic script call.

Scripts read the clock from Redis itself (`TIME`), so replicas with skewed clocks still share
one window. Connection failures become `StateUnavailable` here, at the boundary.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.state.base import (
    DONE_TTL_S,
    PENDING_TTL_S,
    STREAK_COOLDOWN_S,
    STREAK_LIMIT,
    USAGE_TTL_S,
    Admission,
    Counters,
    CounterValues,
    IdemRecord,
    KeyChoice,
    KeyStatus,
    Limits,
    State,
    StateUnavailable,
)

PREFIX = "fg:"
DAY_TTL_S = 2 * 86400
MONTH_TTL_S = 40 * 86400
T = TypeVar("T")
Pairs = list[tuple[bytes, float]]
"""A sorted-set range with scores, as Redis returns it without decoding."""


MAX_CONNECTIONS = 64
POOL_WAIT_S = 10.0
"""A burst of requests queues for one of MAX_CONNECTIONS connections (each call takes well
under a millisecond) rather than failing, as redis-py's default pool does past 100 calls at
once; a wait longer than POOL_WAIT_S means Redis is not keeping up and is an outage."""


def _script(name: str) -> str:
    return resources.files("gateway.state").joinpath(f"lua/{name}.lua").read_text()


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisState(State):
    def __init__(self, url: str, lease_s: float = 30.0, timeout_s: float = 2.0) -> None:
        self.lease_s = lease_s
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_S,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=15,
        )
        self.redis = aioredis.Redis.from_pool(pool)
        self._admit = self.redis.register_script(_script("admit"))
        self._settle = self.redis.register_script(_script("settle"))
        self._key_acquire = self.redis.register_script(_script("key_acquire"))
        self._key_event = self.redis.register_script(_script("key_event"))
        self._idem_begin = self.redis.register_script(_script("idem_begin"))
        self._lock = self.redis.register_script(_script("lock"))
        self._unlock = self.redis.register_script(_script("unlock"))
        self._counters_read = self.redis.register_script(_script("counters_read"))

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StateUnavailable(f"redis: {type(exc).__name__}") from exc
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    @staticmethod
    def _team_keys(names: Counters) -> list[str]:
        return [
            f"{PREFIX}rpm:{names.team}",
            f"{PREFIX}inflight:{names.team}",
            f"{PREFIX}images:{names.team}:{names.day}",
            f"{PREFIX}spend:{names.team}:{names.month}",
        ]

    async def admit(
        self, names: Counters, request_id: str, limits: Limits, images: int, cost_micros: int
    ) -> Admission:
        args = [
            request_id,
            _limit(limits.rpm),
            _limit(limits.max_concurrency),
            int(self.lease_s * 1000),
            _limit(limits.images_per_day),
            images,
            DAY_TTL_S,
            _limit(limits.budget_micros),
            cost_micros,
            MONTH_TTL_S,
        ]
        verdict, wait_ms, remaining = await self._call(
            lambda: self._admit(keys=self._team_keys(names), args=args)
        )
        refused = verdict.decode()
        return Admission(None if refused == "ok" else refused, int(wait_ms) / 1000, int(remaining))

    async def settle(
        self, names: Counters, request_id: str, images_back: int, micros_back: int
    ) -> None:
        keys = self._team_keys(names)[1:]
        await self._call(
            lambda: self._settle(keys=keys, args=[request_id, images_back, micros_back])
        )

    async def renew(self, team: str, request_ids: list[str]) -> None:
        await self._renew(f"{PREFIX}inflight:{team}", request_ids)

    async def counters_read(self, names: Counters) -> CounterValues:
        window, reset_ms, inflight, images, micros = await self._call(
            lambda: self._counters_read(keys=self._team_keys(names))
        )
        return CounterValues(
            int(window), int(reset_ms) / 1000, int(inflight), int(images), int(micros)
        )

    async def _renew(self, name: str, ids: list[str]) -> None:
        if not ids:
            return
        until_ms = await self._now_ms() + int(self.lease_s * 1000)

        async def run() -> Any:
            async with self.redis.pipeline(transaction=False) as pipe:
                for lease_id in ids:
                    pipe.zadd(name, {lease_id: until_ms}, xx=True)
                return await pipe.execute()

        await self._call(run)

    async def _now_ms(self) -> int:
        seconds, micros = await self._call(self.redis.time)
        return int(seconds) * 1000 + int(micros) // 1000

    def _slot_names(self, pool: str, key: str, model: str) -> tuple[str, str]:
        return f"{PREFIX}slots:{pool}:{key}", f"{PREFIX}slots:{pool}:{key}:{model}"

    async def key_acquire(
        self, pool: str, keys: list[str], model: str, lease_id: str, cap: int, model_cap: int | None
    ) -> KeyChoice:
        names: list[str] = []
        for key in keys:
            names += [f"{PREFIX}key:{pool}:{key}", *self._slot_names(pool, key, model)]
        args = [lease_id, int(self.lease_s * 1000), cap, _limit(model_cap)]
        index, wait_ms = await self._call(lambda: self._key_acquire(keys=names, args=args))
        if int(index) > 0:
            return KeyChoice(int(index) - 1)
        return KeyChoice(None, busy=int(index) < 0, retry_after_s=int(wait_ms) / 1000)

    async def key_release(self, pool: str, key: str, model: str, lease_id: str) -> None:
        total, per_model = self._slot_names(pool, key, model)

        async def run() -> Any:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(total, lease_id)
                pipe.zrem(per_model, lease_id)
                return await pipe.execute()

        await self._call(run)

    async def key_renew(self, pool: str, key: str, model: str, lease_ids: list[str]) -> None:
        for name in self._slot_names(pool, key, model):
            await self._renew(name, lease_ids)

    async def key_event(
        self, pool: str, key: str, event: str, seconds: float = -1, detail: str = ""
    ) -> KeyStatus:
        args = [event, seconds, detail, STREAK_LIMIT, STREAK_COOLDOWN_S]
        disabled, cooldown_ms, claimed = await self._call(
            lambda: self._key_event(keys=[f"{PREFIX}key:{pool}:{key}"], args=args)
        )
        return KeyStatus(int(disabled) == 1, int(cooldown_ms) / 1000, int(claimed) == 1)

    async def key_info(self, pool: str, key: str) -> dict[str, str]:
        raw = await self._call(lambda: self.redis.hgetall(f"{PREFIX}key:{pool}:{key}"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def key_inflight(self, pool: str, key: str) -> int:
        name = self._slot_names(pool, key, "")[0]
        now_ms = await self._now_ms()
        return int(await self._call(lambda: self.redis.zcount(name, now_ms, "+inf")))

    async def idem_begin(self, name: str, body_hash: str) -> IdemRecord | None:
        reply = await self._call(
            lambda: self._idem_begin(
                keys=[f"{PREFIX}idem:{name}"], args=[body_hash, int(PENDING_TTL_S * 1000)]
            )
        )
        if reply[0] == b"new":
            return None
        return IdemRecord(reply[0].decode(), reply[1].decode(), bytes(reply[2]))

    async def idem_finish(self, name: str, response: bytes) -> None:
        await self._call(
            lambda: self.redis.hset(
                f"{PREFIX}idem:{name}", mapping={"state": "done", "response": response}
            )
        )
        await self._call(lambda: self.redis.expire(f"{PREFIX}idem:{name}", int(DONE_TTL_S)))

    async def idem_drop(self, name: str) -> None:
        await self._call(lambda: self.redis.delete(f"{PREFIX}idem:{name}"))

    async def usage_add(self, team: str, day: str, counts: dict[str, int]) -> None:
        name = f"{PREFIX}usage:{team}:{day}"

        async def run() -> Any:
            async with self.redis.pipeline(transaction=False) as pipe:
                for field, value in counts.items():
                    pipe.hincrby(name, field, value)
                pipe.expire(name, int(USAGE_TTL_S))
                return await pipe.execute()

        await self._call(run)

    async def usage_get(self, team: str, days: list[str]) -> dict[str, dict[str, int]]:
        async def run() -> Any:
            async with self.redis.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(f"{PREFIX}usage:{team}:{day}")
                return await pipe.execute()

        replies = await self._call(run)
        return {
            day: {k.decode(): int(v) for k, v in reply.items()}
            for day, reply in zip(days, replies, strict=True)
            if reply
        }

    async def index_add(self, name: str, member: str, score: float) -> None:
        await self._call(lambda: self.redis.zadd(f"{PREFIX}index:{name}", {member: score}))

    async def index_page(
        self, name: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        high = "+inf" if before is None else f"({before!r}"
        found = await self._call(
            lambda: self.redis.zrevrangebyscore(
                f"{PREFIX}index:{name}", high, "-inf", start=0, num=limit, withscores=True
            )
        )
        return [(member.decode(), float(score)) for member, score in cast(Pairs, found)]

    async def index_remove(self, name: str, members: list[str]) -> None:
        if members:
            await self._call(lambda: self.redis.zrem(f"{PREFIX}index:{name}", *members))

    async def list_push(self, name: str, item: bytes, keep: int) -> None:
        key = f"{PREFIX}list:{name}"

        async def run() -> Any:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(key, item)
                pipe.ltrim(key, 0, keep - 1)
                return await pipe.execute()

        await self._call(run)

    async def list_read(self, name: str, limit: int) -> list[bytes]:
        found = await self._call(lambda: self.redis.lrange(f"{PREFIX}list:{name}", 0, limit - 1))
        return list(cast(list[bytes], found))

    async def lock(self, name: str, owner: str, ttl_s: float) -> bool:
        held = await self._call(
            lambda: self._lock(keys=[f"{PREFIX}lock:{name}"], args=[owner, int(ttl_s * 1000)])
        )
        return int(held) == 1

    async def unlock(self, name: str, owner: str) -> None:
        await self._call(lambda: self._unlock(keys=[f"{PREFIX}lock:{name}"], args=[owner]))

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self.redis.ping))
        except StateUnavailable:
            return False

    async def aclose(self) -> None:
        await self.redis.aclose()
