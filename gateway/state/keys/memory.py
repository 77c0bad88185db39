"""Key slots and key health in this process."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from gateway.state.admission.memory import expire
from gateway.state.keys.base import KeyChoice, KeyEvent, KeyStatus, Slot, SlotCaps, Streak


@dataclass
class _Key:
    disabled: bool = False
    cooldown_until: float = 0.0
    recheck_at: float = 0.0
    failures: int = 0
    cooldowns: int = 0
    last_error: str | None = None

    def status(self) -> KeyStatus:
        return KeyStatus(self.disabled, self.cooldown_until, self.recheck_at, self.last_error)


def _slot_names(pool: str, key: str, model: str) -> tuple[str, str, str]:
    """The key's slots, then the account's, then the account's for this model."""
    return f"slots:{pool}:{key}", f"account:{pool}", f"account:{pool}:model:{model}"


class MemoryKeySlots:
    def __init__(self, lease_s: float = 30.0) -> None:
        self.lease_s = lease_s
        self._keys: dict[str, _Key] = defaultdict(_Key)
        self._slots: dict[str, dict[str, float]] = defaultdict(dict)

    def _key(self, pool: str, key: str) -> _Key:
        return self._keys[f"{pool}:{key}"]

    def _live(self, name: str, now: float) -> int:
        return len(expire(self._slots[name], now))

    async def key_acquire(
        self, pool: str, keys: list[str], model: str, lease_id: str, caps: SlotCaps
    ) -> KeyChoice:
        now = time.time()
        _, account, per_model = _slot_names(pool, "", model)
        full = (caps.account is not None and self._live(account, now) >= caps.account) or (
            caps.model is not None and self._live(per_model, now) >= caps.model
        )
        best: int | None = None
        best_load = 0
        usable = 0
        wait: float | None = None
        for index, name in enumerate(keys):
            state = self._key(pool, name)
            if state.disabled:
                blocked = max(state.recheck_at - now, 1.0)
            elif state.cooldown_until > now:
                blocked = state.cooldown_until - now
            else:
                usable += 1
                load = self._live(_slot_names(pool, name, model)[0], now)
                if not full and load < caps.per_key and (best is None or load < best_load):
                    best, best_load = index, load
                continue
            wait = blocked if wait is None else min(wait, blocked)
        if best is None:
            return KeyChoice(None, busy=usable > 0, retry_after_s=wait or 0.0)
        until = now + self.lease_s
        for slots in _slot_names(pool, keys[best], model):
            self._slots[slots][lease_id] = until
        return KeyChoice(best, slot=Slot(pool, keys[best], model, lease_id, "memory"))

    async def key_release(self, slot: Slot) -> None:
        for name in _slot_names(slot.pool, slot.key, slot.model):
            self._slots[name].pop(slot.lease_id, None)

    async def key_renew(self, slots: list[Slot]) -> None:
        until = time.time() + self.lease_s
        for slot in slots:
            for name in _slot_names(slot.pool, slot.key, slot.model):
                held = self._slots[name]
                if slot.lease_id in held:
                    held[slot.lease_id] = until

    async def pool_inflight(self, pool: str, model: str | None = None) -> int:
        _, account, per_model = _slot_names(pool, "", model or "")
        return self._live(account if model is None else per_model, time.time())

    async def key_inflight(self, pool: str, key: str) -> int:
        return self._live(_slot_names(pool, key, "")[0], time.time())

    async def key_event(
        self,
        pool: str,
        key: str,
        event: KeyEvent,
        streak: Streak,
        seconds: float = -1,
        detail: str = "",
    ) -> KeyStatus:
        now = time.time()
        state = self._key(pool, key)
        if event == "ok":
            state.failures = state.cooldowns = 0
        elif event == "rate_limited":
            state.cooldowns += 1
            if seconds < 0:
                seconds = min(300.0, 5.0 * 2 ** (state.cooldowns - 1))
            state.cooldown_until, state.last_error = now + seconds, detail or None
        elif event == "failed":
            state.failures += 1
            state.last_error = detail or None
            if state.failures >= streak.failures:
                state.failures, state.cooldown_until = 0, now + streak.cooldown_s
        elif event == "disable":
            state.disabled, state.recheck_at, state.last_error = True, now + seconds, detail or None
        elif event == "enable":
            state.disabled, state.cooldown_until, state.failures, state.cooldowns = False, 0, 0, 0
        return state.status()

    async def key_claim_recheck(self, pool: str, key: str, seconds: float) -> bool:
        now = time.time()
        state = self._key(pool, key)
        if state.disabled and state.recheck_at <= now:
            state.recheck_at = now + seconds
            return True
        return False

    async def key_status(self, pool: str, key: str) -> KeyStatus:
        return self._key(pool, key).status()
