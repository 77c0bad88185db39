"""Idempotency records in Redis: the claim is one script, so two replicas cannot both win."""

from __future__ import annotations

from typing import Any

from gateway.state.connection import RedisConnection
from gateway.state.idempotency.base import DONE_TTL_S, PENDING_TTL_S, IdemRecord


class RedisIdempotency:
    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self._begin = conn.script("idem_begin")

    async def idem_begin(self, name: str, body_hash: str) -> IdemRecord | None:
        key = self.conn.key("idem", name)
        args: list[str | int] = [body_hash, int(PENDING_TTL_S * 1000)]
        reply = await self.conn.call(lambda: self._begin(keys=[key], args=args))
        if reply[0] == b"new":
            return None
        return IdemRecord(reply[0].decode(), reply[1].decode(), bytes(reply[2]))

    async def idem_finish(self, name: str, response: bytes) -> None:
        key = self.conn.key("idem", name)

        async def run() -> Any:
            async with self.conn.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"state": "done", "response": response})
                pipe.expire(key, int(DONE_TTL_S))
                return await pipe.execute()

        await self.conn.call(run)

    async def idem_drop(self, name: str) -> None:
        await self.conn.call(lambda: self.conn.redis.delete(self.conn.key("idem", name)))
