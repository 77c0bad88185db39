"""Redis state: every limit exact across replicas, each admission one atomic script call.

Scripts read the clock from Redis itself (`TIME`), so replicas with skewed clocks still share
one window. Connection failures become `StateUnavailable` here, at the boundary. Every key
starts with `state.key_prefix`, so several gateways can share one Redis.

Nothing is sent twice: a script whose answer was lost (a stalled Redis) may still run once
Redis resumes, so re-sending it could take two leases for one request. Instead an admission
whose answer was lost is settled in the background as unused, and whatever it took carries an
expiry: the lease and its reservation go back by themselves. Each call is bounded by the
request's budget (`budget.py`), so a request waits `timeout_s` in all, not per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.errors import StateUnavailable
from gateway.state.base import (
    DONE_TTL_S,
    PENDING_TTL_S,
    SETTLED_TTL_S,
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
    SlotCaps,
    State,
)
from gateway.state.budget import BudgetSpent, bounded, detached

DEFAULT_PREFIX = "fg:"
DAY_TTL_S = 2 * 86400
MONTH_TTL_S = 40 * 86400
T = TypeVar("T")
Pairs = list[tuple[bytes, float]]
"""A sorted-set range with scores, as Redis returns it without decoding."""


MAX_CONNECTIONS = 64
"""A burst of requests queues for one of MAX_CONNECTIONS connections (each call takes well
under a millisecond) rather than failing, as redis-py's default pool does past 100 calls at
once. The wait for a connection counts against the call's timeout like the call itself."""


def _script(name: str) -> str:
    return resources.files("gateway.state").joinpath(f"lua/{name}.lua").read_text()


def _limit(value: int | None) -> int:
    return -1 if value is None else value


class RedisState(State):
    def __init__(
        self,
        url: str,
        lease_s: float = 30.0,
        timeout_s: float = 2.0,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.lease_s = lease_s
        self.timeout_s = timeout_s
        self.prefix = prefix
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=None,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            # Nothing before the command on a new connection (RESP2: no HELLO; no CLIENT SETINFO;
            # no health-check PING): to a paused Redis the command is then at least sent, so a
            # settlement issued during a stall lands when Redis resumes. A closed connection is
            # still replaced when it is taken from the pool.
            protocol=2,
            driver_info=None,
        )
        self.redis = aioredis.Redis.from_pool(pool)
        self._admit = self.redis.register_script(_script("admit"))
        self._settle = self.redis.register_script(_script("settle"))
        self._renew_script = self.redis.register_script(_script("renew"))
        self._key_acquire = self.redis.register_script(_script("key_acquire"))
        self._key_event = self.redis.register_script(_script("key_event"))
        self._idem_begin = self.redis.register_script(_script("idem_begin"))
        self._lock = self.redis.register_script(_script("lock"))
        self._unlock = self.redis.register_script(_script("unlock"))
        self._counters_read = self.redis.register_script(_script("counters_read"))
        self._cleanups: set[asyncio.Task[Any]] = set()

    async def _call(
        self, operation: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        """One round trip, sent once, within the call's timeout and the request's budget."""
        try:
            async with bounded(timeout_s or self.timeout_s):
                return await operation()
        except BudgetSpent:
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StateUnavailable(f"redis: {type(exc).__name__}") from exc
        except RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from exc

    def _name(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _team_keys(self, names: Counters) -> list[str]:
        return [
            self._name("rpm", names.team),
            self._name("inflight", names.team),
            self._name("images", names.team, names.day),
            self._name("spend", names.team, names.month),
            self._name("resv", names.team),
            self._name("settled", names.team),
        ]

    async def admit(
        self, names: Counters, request_id: str, limits: Limits, images: int, cost_micros: int
    ) -> Admission:
        args: list[str | int] = [
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
        try:
            verdict, wait_ms, remaining = await self._call(
                lambda: self._admit(keys=self._team_keys(names), args=args)
            )
        except BudgetSpent:
            raise
        except StateUnavailable:
            # The script may still run when Redis answers again: settle it as unused, so its
            # lease and reservation are freed (or, settled first, it is kept out).
            detached(
                lambda: self._send_settle(names, request_id, 0, 0, self.lease_s), self._cleanups
            )
            raise
        refused = verdict.decode()
        return Admission(None if refused == "ok" else refused, int(wait_ms) / 1000, int(remaining))

    async def settle(
        self, names: Counters, request_id: str, images_used: int, micros_used: int
    ) -> None:
        try:
            await self._send_settle(names, request_id, images_used, micros_used, self.timeout_s)
        except BudgetSpent:
            # Not sent: send it once in the background, so it lands when Redis answers again.
            detached(
                lambda: self._send_settle(
                    names, request_id, images_used, micros_used, self.lease_s
                ),
                self._cleanups,
            )
            raise

    async def _send_settle(
        self, names: Counters, request_id: str, images: int, micros: int, timeout_s: float
    ) -> None:
        """A cleanup after a lost answer may wait up to a lease for a connection: by then
        the lease it frees has expired anyway."""
        _, inflight, images_key, spend, resv, settled = self._team_keys(names)
        args: list[str | int] = [
            request_id,
            images,
            micros,
            DAY_TTL_S,
            MONTH_TTL_S,
            int(SETTLED_TTL_S * 1000),
        ]
        keys = [inflight, images_key, spend, resv, settled]
        await self._call(lambda: self._settle(keys=keys, args=args), timeout_s)

    async def renew(self, team: str, request_ids: list[str]) -> None:
        names = [self._name("inflight", team), self._name("resv", team)]
        await self._renew(names, 1, MONTH_TTL_S, request_ids)

    async def counters_read(self, names: Counters) -> CounterValues:
        window, reset_ms, inflight, images, micros = await self._call(
            lambda: self._counters_read(keys=self._team_keys(names)[:4])
        )
        return CounterValues(
            int(window), int(reset_ms) / 1000, int(inflight), int(images), int(micros)
        )

    async def _renew(self, names: list[str], zsets: int, ttl_s: float, ids: list[str]) -> None:
        """Extend `ids` in the first `zsets` of `names`; keep every name alive for `ttl_s`."""
        if not ids:
            return
        args: list[str | int] = [int(self.lease_s * 1000), int(ttl_s * 1000), zsets, *ids]
        await self._call(lambda: self._renew_script(keys=names, args=args))

    async def _now_ms(self) -> int:
        seconds, micros = await self._call(self.redis.time)
        return int(seconds) * 1000 + int(micros) // 1000

    def _slot_names(self, pool: str, key: str, model: str) -> list[str]:
        """The key's slots, then the account's, then the account's for this model."""
        return [
            self._name("slots", pool, key),
            self._name("account", pool),
            self._name("account", pool, "model", model),
        ]

    async def key_acquire(
        self, pool: str, keys: list[str], model: str, lease_id: str, caps: SlotCaps
    ) -> KeyChoice:
        account = self._slot_names(pool, "", model)[1:]
        names: list[str] = [*account]
        for key in keys:
            names += [self._name("key", pool, key), self._name("slots", pool, key)]
        args: list[str | int] = [
            lease_id,
            int(self.lease_s * 1000),
            caps.per_key,
            _limit(caps.account),
            _limit(caps.model),
        ]
        index, wait_ms = await self._call(lambda: self._key_acquire(keys=names, args=args))
        if int(index) > 0:
            return KeyChoice(int(index) - 1)
        return KeyChoice(None, busy=int(index) < 0, retry_after_s=int(wait_ms) / 1000)

    async def key_release(self, pool: str, key: str, model: str, lease_id: str) -> None:
        names = self._slot_names(pool, key, model)

        async def run() -> Any:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zrem(name, lease_id)
                return await pipe.execute()

        await self._call(run)

    async def key_renew(self, pool: str, key: str, model: str, lease_ids: list[str]) -> None:
        await self._renew(self._slot_names(pool, key, model), 3, self.lease_s * 4, lease_ids)

    async def pool_inflight(self, pool: str, model: str | None = None) -> int:
        names = self._slot_names(pool, "", model or "")
        name = names[1] if model is None else names[2]
        now_ms = await self._now_ms()
        return int(await self._call(lambda: self.redis.zcount(name, now_ms, "+inf")))

    async def key_event(
        self, pool: str, key: str, event: str, seconds: float = -1, detail: str = ""
    ) -> KeyStatus:
        args: list[str | float] = [event, seconds, detail, STREAK_LIMIT, STREAK_COOLDOWN_S]
        disabled, cooldown_ms, claimed = await self._call(
            lambda: self._key_event(keys=[f"{self.prefix}key:{pool}:{key}"], args=args)
        )
        return KeyStatus(int(disabled) == 1, int(cooldown_ms) / 1000, int(claimed) == 1)

    async def key_info(self, pool: str, key: str) -> dict[str, str]:
        raw = await self._call(lambda: self.redis.hgetall(f"{self.prefix}key:{pool}:{key}"))
        return {k.decode(): v.decode() for k, v in cast(dict[bytes, bytes], raw).items()}

    async def key_inflight(self, pool: str, key: str) -> int:
        name = self._slot_names(pool, key, "")[0]
        now_ms = await self._now_ms()
        return int(await self._call(lambda: self.redis.zcount(name, now_ms, "+inf")))

    async def idem_begin(self, name: str, body_hash: str) -> IdemRecord | None:
        reply = await self._call(
            lambda: self._idem_begin(
                keys=[f"{self.prefix}idem:{name}"], args=[body_hash, int(PENDING_TTL_S * 1000)]
            )
        )
        if reply[0] == b"new":
            return None
        return IdemRecord(reply[0].decode(), reply[1].decode(), bytes(reply[2]))

    async def idem_finish(self, name: str, response: bytes) -> None:
        key = f"{self.prefix}idem:{name}"

        async def run() -> Any:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"state": "done", "response": response})
                pipe.expire(key, int(DONE_TTL_S))
                return await pipe.execute()

        await self._call(run)

    async def idem_drop(self, name: str) -> None:
        await self._call(lambda: self.redis.delete(f"{self.prefix}idem:{name}"))

    async def usage_add(self, team: str, day: str, counts: dict[str, int]) -> None:
        name = f"{self.prefix}usage:{team}:{day}"

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
                    pipe.hgetall(f"{self.prefix}usage:{team}:{day}")
                return await pipe.execute()

        replies = await self._call(run)
        return {
            day: {k.decode(): int(v) for k, v in reply.items()}
            for day, reply in zip(days, replies, strict=True)
            if reply
        }

    async def index_add(self, name: str, member: str, score: float) -> None:
        await self._call(lambda: self.redis.zadd(f"{self.prefix}index:{name}", {member: score}))

    async def index_page(
        self, name: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        high = "+inf" if before is None else f"({before!r}"
        found = await self._call(
            lambda: self.redis.zrevrangebyscore(
                f"{self.prefix}index:{name}", high, "-inf", start=0, num=limit, withscores=True
            )
        )
        return [(member.decode(), float(score)) for member, score in cast(Pairs, found)]

    async def index_remove(self, name: str, members: list[str]) -> None:
        if members:
            await self._call(lambda: self.redis.zrem(f"{self.prefix}index:{name}", *members))

    async def list_push(self, name: str, item: bytes, keep: int) -> None:
        key = f"{self.prefix}list:{name}"

        async def run() -> Any:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(key, item)
                pipe.ltrim(key, 0, keep - 1)
                return await pipe.execute()

        await self._call(run)

    async def list_read(self, name: str, limit: int) -> list[bytes]:
        found = await self._call(
            lambda: self.redis.lrange(f"{self.prefix}list:{name}", 0, limit - 1)
        )
        return list(cast(list[bytes], found))

    async def lock(self, name: str, owner: str, ttl_s: float) -> bool:
        held = await self._call(
            lambda: self._lock(keys=[f"{self.prefix}lock:{name}"], args=[owner, int(ttl_s * 1000)])
        )
        return int(held) == 1

    async def unlock(self, name: str, owner: str) -> None:
        await self._call(lambda: self._unlock(keys=[f"{self.prefix}lock:{name}"], args=[owner]))

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self.redis.ping))
        except StateUnavailable:
            return False

    async def cleanups_sent(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the settlements of lost answers to finish."""
        if self._cleanups:
            await asyncio.wait(list(self._cleanups), timeout=timeout_s)

    async def aclose(self) -> None:
        await self.cleanups_sent(self.timeout_s)
        for task in list(self._cleanups):
            task.cancel()
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        await self.redis.aclose()
