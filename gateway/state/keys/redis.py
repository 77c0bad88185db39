"""Key slots and key health in Redis: one atomic script picks a key and takes its slot.

Times are kept in milliseconds of the Redis clock and returned as seconds.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any, cast

from gateway.state.connection import RedisConnection, limit
from gateway.state.keys.base import KeyChoice, KeyEvent, KeyStatus, Slot, SlotCaps, Streak


def _status(disabled: Any, cooldown_ms: Any, recheck_ms: Any, last_error: Any) -> KeyStatus:
    """A key's state as Redis keeps it (flag, ms, ms, text) as a `KeyStatus` in seconds."""
    error = last_error.decode() if isinstance(last_error, bytes) else last_error
    return KeyStatus(
        float(disabled or 0) == 1,
        float(cooldown_ms or 0) / 1000,
        float(recheck_ms or 0) / 1000,
        error or None,
    )


def _where(slot: Slot) -> tuple[str, str, str]:
    return slot.pool, slot.key, slot.model


class RedisKeySlots:
    def __init__(self, conn: RedisConnection, lease_s: float = 30.0) -> None:
        self.conn = conn
        self.lease_s = lease_s
        self._acquire = conn.script("key_acquire")
        self._event = conn.script("key_event")
        self._renew = conn.script("renew")

    def _slot_names(self, pool: str, key: str, model: str) -> list[str]:
        """The key's slots, then the account's, then the account's for this model."""
        name = self.conn.key
        return [
            name("slots", pool, key),
            name("account", pool),
            name("account", pool, "model", model),
        ]

    async def key_acquire(
        self, pool: str, keys: list[str], model: str, lease_id: str, caps: SlotCaps
    ) -> KeyChoice:
        names = self._slot_names(pool, "", model)[1:]
        for key in keys:
            names += [self.conn.key("key", pool, key), self.conn.key("slots", pool, key)]
        args: list[str | int] = [
            lease_id,
            int(self.lease_s * 1000),
            caps.per_key,
            limit(caps.account),
            limit(caps.model),
        ]
        index, wait_ms = await self.conn.call(lambda: self._acquire(keys=names, args=args))
        if int(index) > 0:
            chosen = int(index) - 1
            return KeyChoice(chosen, slot=Slot(pool, keys[chosen], model, lease_id, "redis"))
        return KeyChoice(None, busy=int(index) < 0, retry_after_s=int(wait_ms) / 1000)

    async def key_release(self, slot: Slot) -> None:
        names = self._slot_names(*_where(slot))

        async def run() -> Any:
            async with self.conn.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.zrem(name, slot.lease_id)
                return await pipe.execute()

        await self.conn.call(run)

    async def key_renew(self, slots: list[Slot]) -> None:
        """One script call per key and model among `slots`."""
        for where, group in groupby(sorted(slots, key=_where), key=_where):
            names = self._slot_names(*where)
            ids = [slot.lease_id for slot in group]
            args: list[str | int] = [int(self.lease_s * 1000), int(self.lease_s * 4000), 3, *ids]
            await self.conn.run(self._renew, names, args)

    async def pool_inflight(self, pool: str, model: str | None = None) -> int:
        names = self._slot_names(pool, "", model or "")
        return await self._live(names[1] if model is None else names[2])

    async def key_inflight(self, pool: str, key: str) -> int:
        return await self._live(self._slot_names(pool, key, "")[0])

    async def _live(self, name: str) -> int:
        now_ms = await self.conn.now_ms()
        return int(await self.conn.call(lambda: self.conn.redis.zcount(name, now_ms, "+inf")))

    async def _send_event(
        self, pool: str, key: str, event: str, streak: Streak, seconds: float, detail: str
    ) -> tuple[KeyStatus, bool]:
        args: list[str | float] = [event, seconds, detail, streak.failures, streak.cooldown_s]
        disabled, cooldown_ms, recheck_ms, error, claimed = await self.conn.call(
            lambda: self._event(keys=[self.conn.key("key", pool, key)], args=args)
        )
        return _status(disabled, cooldown_ms, recheck_ms, error), int(claimed) == 1

    async def key_event(
        self,
        pool: str,
        key: str,
        event: KeyEvent,
        streak: Streak,
        seconds: float = -1,
        detail: str = "",
    ) -> KeyStatus:
        status, _ = await self._send_event(pool, key, event, streak, seconds, detail)
        return status

    async def key_claim_recheck(self, pool: str, key: str, seconds: float) -> bool:
        _, claimed = await self._send_event(pool, key, "claim_recheck", _NO_STREAK, seconds, "")
        return claimed

    async def key_status(self, pool: str, key: str) -> KeyStatus:
        raw = await self.conn.call(lambda: self.conn.redis.hgetall(self.conn.key("key", pool, key)))
        fields = {k.decode(): v for k, v in cast(dict[bytes, bytes], raw).items()}
        return _status(
            fields.get("disabled"),
            fields.get("cooldown_until"),
            fields.get("recheck_at"),
            fields.get("last_error"),
        )


_NO_STREAK = Streak(0, 0.0)
"""A recheck claim counts no failure: the script reads the streak only for `failed`."""
