"""Usage counters (hashes), indexes (sorted sets) and capped lists in Redis."""

from __future__ import annotations

from typing import Any, cast

from gateway.state.connection import RedisConnection
from gateway.state.records.base import USAGE_TTL_S

Pairs = list[tuple[bytes, float]]
"""A sorted-set range with scores, as Redis returns it without decoding."""


class RedisUsage:
    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn

    async def usage_add(self, name: str, day: str, counts: dict[str, int]) -> None:
        key = self.conn.key("usage", name, day)

        async def run() -> Any:
            async with self.conn.redis.pipeline(transaction=False) as pipe:
                for field, value in counts.items():
                    pipe.hincrby(key, field, value)
                pipe.expire(key, int(USAGE_TTL_S))
                return await pipe.execute()

        await self.conn.call(run)

    async def usage_get(self, name: str, days: list[str]) -> dict[str, dict[str, int]]:
        async def run() -> Any:
            async with self.conn.redis.pipeline(transaction=False) as pipe:
                for day in days:
                    pipe.hgetall(self.conn.key("usage", name, day))
                return await pipe.execute()

        replies = await self.conn.call(run)
        return {
            day: {k.decode(): int(v) for k, v in reply.items()}
            for day, reply in zip(days, replies, strict=True)
            if reply
        }


class RedisListings:
    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn

    async def index_add(self, name: str, member: str, score: float) -> None:
        key = self.conn.key("index", name)
        await self.conn.call(lambda: self.conn.redis.zadd(key, {member: score}))

    async def index_page(
        self, name: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        key, high = self.conn.key("index", name), "+inf" if before is None else f"({before!r}"
        found = await self.conn.call(
            lambda: self.conn.redis.zrevrangebyscore(
                key, high, "-inf", start=0, num=limit, withscores=True
            )
        )
        return [(member.decode(), float(score)) for member, score in cast(Pairs, found)]

    async def index_remove(self, name: str, members: list[str]) -> None:
        if members:
            key = self.conn.key("index", name)
            await self.conn.call(lambda: self.conn.redis.zrem(key, *members))

    async def list_push(self, name: str, item: bytes, keep: int) -> None:
        key = self.conn.key("list", name)

        async def run() -> Any:
            async with self.conn.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(key, item)
                pipe.ltrim(key, 0, keep - 1)
                return await pipe.execute()

        await self.conn.call(run)

    async def list_read(self, name: str, limit: int) -> list[bytes]:
        key = self.conn.key("list", name)
        found = await self.conn.call(lambda: self.conn.redis.lrange(key, 0, limit - 1))
        return list(cast(list[bytes], found))
