"""In-process state: exact within one process, nothing to run. The embedded default."""

from __future__ import annotations

import bisect
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from gateway.state.base import (
    DONE_TTL_S,
    PENDING_TTL_S,
    SETTLED_TTL_S,
    STREAK_COOLDOWN_S,
    STREAK_LIMIT,
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

WINDOW_S = 60.0
IDEM_SWEEP_AT = 10_000


def _expire(leases: dict[str, float], now: float) -> dict[str, float]:
    for lease_id in [k for k, until in leases.items() if until <= now]:
        del leases[lease_id]
    return leases


@dataclass(frozen=True)
class Reservation:
    """What one admitted request holds, and the counters it holds it in."""

    images: int
    micros: int
    day_key: str
    month_key: str


class MemoryState(State):
    def __init__(self, lease_s: float = 30.0) -> None:
        self.lease_s = lease_s
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._inflight: dict[str, dict[str, float]] = defaultdict(dict)
        self._counters: dict[str, int] = defaultdict(int)
        self._reservations: dict[str, dict[str, Reservation]] = defaultdict(dict)
        self._settled: dict[str, dict[str, float]] = defaultdict(dict)
        self._keys: dict[str, dict[str, float | str]] = defaultdict(dict)
        self._slots: dict[str, dict[str, float]] = defaultdict(dict)
        self._idem: dict[str, tuple[IdemRecord, float]] = {}
        self._usage: dict[str, dict[str, dict[str, int]]] = defaultdict(dict)
        self._locks: dict[str, tuple[str, float]] = {}
        self._indexes: dict[str, SortedIndex] = defaultdict(SortedIndex)
        self._lists: dict[str, deque[bytes]] = {}

    async def admit(
        self, names: Counters, request_id: str, limits: Limits, images: int, cost_micros: int
    ) -> Admission:
        now = time.time()
        if request_id in _expire(self._settled[names.team], now):
            return Admission("settled", 0.0, 0)
        self._give_back_expired(names.team, now)
        window = self._windows[names.team]
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        rpm = limits.rpm if limits.rpm is not None else -1
        reset = window[0] + WINDOW_S - now if window else 0.0
        if limits.rpm is not None and len(window) >= limits.rpm:
            return Admission("rpm", reset, 0)
        leases = self._inflight[names.team]
        if limits.max_concurrency is not None and len(leases) >= limits.max_concurrency:
            return Admission("concurrency", 1.0, rpm - len(window))
        day_key, month_key = f"{names.team}:{names.day}", f"{names.team}:{names.month}"
        if (
            limits.images_per_day is not None
            and self._counters[day_key] + images > limits.images_per_day
        ):
            return Admission("images", 0.0, rpm - len(window))
        if (
            limits.budget_micros is not None
            and self._counters[month_key] + cost_micros > limits.budget_micros
        ):
            return Admission("budget", 0.0, rpm - len(window))
        window.append(now)
        leases[request_id] = now + self.lease_s
        self._reservations[names.team][request_id] = Reservation(
            images, cost_micros, day_key, month_key
        )
        self._counters[day_key] += images
        self._counters[month_key] += cost_micros
        return Admission(None, window[0] + WINDOW_S - now, rpm - len(window))

    def _give_back_expired(self, team: str, now: float) -> None:
        """Leases that expired (their process died) give their reservations back."""
        leases = self._inflight[team]
        held = self._reservations[team]
        for request_id in [k for k, until in leases.items() if until <= now]:
            del leases[request_id]
            gone = held.pop(request_id, None)
            if gone is not None:
                self._counters[gone.day_key] -= gone.images
                self._counters[gone.month_key] -= gone.micros

    async def settle(
        self, names: Counters, request_id: str, images_used: int, micros_used: int
    ) -> None:
        self._inflight[names.team].pop(request_id, None)
        held = self._reservations[names.team].pop(request_id, None)
        if held is None:
            self._settled[names.team][request_id] = time.time() + SETTLED_TTL_S
        for key, delta in (
            (f"{names.team}:{names.day}", images_used - (held.images if held else 0)),
            (f"{names.team}:{names.month}", micros_used - (held.micros if held else 0)),
        ):
            self._counters[key] = max(self._counters[key] + delta, 0)

    async def renew(self, team: str, request_ids: list[str]) -> None:
        leases = self._inflight[team]
        until = time.time() + self.lease_s
        for request_id in request_ids:
            if request_id in leases:
                leases[request_id] = until

    async def counters_read(self, names: Counters) -> CounterValues:
        now = time.time()
        window = [t for t in self._windows.get(names.team, ()) if t > now - WINDOW_S]
        return CounterValues(
            len(window),
            window[0] + WINDOW_S - now if window else 0.0,
            sum(until > now for until in self._inflight.get(names.team, {}).values()),
            self._counters.get(f"{names.team}:{names.day}", 0),
            self._counters.get(f"{names.team}:{names.month}", 0),
        )

    def _key_state(self, pool: str, key: str) -> dict[str, float | str]:
        return self._keys[f"{pool}:{key}"]

    def _slot_names(self, pool: str, key: str, model: str) -> tuple[str, str, str]:
        """The key's slots, then the account's, then the account's for this model."""
        return f"slots:{pool}:{key}", f"account:{pool}", f"account:{pool}:model:{model}"

    async def key_acquire(
        self, pool: str, keys: list[str], model: str, lease_id: str, caps: SlotCaps
    ) -> KeyChoice:
        now = time.time()
        _, account, per_model = self._slot_names(pool, "", model)
        full = (
            caps.account is not None and len(_expire(self._slots[account], now)) >= caps.account
        ) or (caps.model is not None and len(_expire(self._slots[per_model], now)) >= caps.model)
        best: int | None = None
        best_load = 0
        usable = 0
        wait: float | None = None
        for index, key in enumerate(keys):
            state = self._key_state(pool, key)
            if state.get("disabled") == 1:
                blocked = max(float(state.get("recheck_at", 0)) - now, 1.0)
            elif float(state.get("cooldown_until", 0)) > now:
                blocked = float(state["cooldown_until"]) - now
            else:
                usable += 1
                load = len(_expire(self._slots[self._slot_names(pool, key, model)[0]], now))
                if not full and load < caps.per_key and (best is None or load < best_load):
                    best, best_load = index, load
                continue
            wait = blocked if wait is None else min(wait, blocked)
        if best is None:
            return KeyChoice(None, busy=usable > 0, retry_after_s=wait or 0.0)
        until = now + self.lease_s
        for name in self._slot_names(pool, keys[best], model):
            self._slots[name][lease_id] = until
        return KeyChoice(best)

    async def key_release(self, pool: str, key: str, model: str, lease_id: str) -> None:
        for name in self._slot_names(pool, key, model):
            self._slots[name].pop(lease_id, None)

    async def key_renew(self, pool: str, key: str, model: str, lease_ids: list[str]) -> None:
        until = time.time() + self.lease_s
        for name in self._slot_names(pool, key, model):
            slots = self._slots[name]
            for lease_id in lease_ids:
                if lease_id in slots:
                    slots[lease_id] = until

    async def pool_inflight(self, pool: str, model: str | None = None) -> int:
        _, account, per_model = self._slot_names(pool, "", model or "")
        return len(_expire(self._slots[account if model is None else per_model], time.time()))

    async def key_event(
        self, pool: str, key: str, event: str, seconds: float = -1, detail: str = ""
    ) -> KeyStatus:
        now = time.time()
        state = self._key_state(pool, key)
        claimed = False
        if event == "ok":
            state.update(failures=0, cooldowns=0)
        elif event == "rate_limited":
            cooldowns = int(state.get("cooldowns", 0)) + 1
            if seconds < 0:
                seconds = min(300.0, 5.0 * 2 ** (cooldowns - 1))
            state.update(cooldowns=cooldowns, cooldown_until=now + seconds, last_error=detail)
        elif event == "failed":
            failures = int(state.get("failures", 0)) + 1
            state.update(failures=failures, last_error=detail)
            if failures >= STREAK_LIMIT:
                state.update(failures=0, cooldown_until=now + STREAK_COOLDOWN_S)
        elif event == "disable":
            state.update(disabled=1, recheck_at=now + seconds, last_error=detail)
        elif event == "enable":
            state.update(disabled=0, cooldown_until=0, failures=0, cooldowns=0)
        elif (
            event == "claim_recheck"
            and state.get("disabled") == 1
            and float(state.get("recheck_at", 0)) <= now
        ):
            state["recheck_at"] = now + seconds
            claimed = True
        return KeyStatus(state.get("disabled") == 1, float(state.get("cooldown_until", 0)), claimed)

    async def key_info(self, pool: str, key: str) -> dict[str, str]:
        return {k: str(v) for k, v in self._key_state(pool, key).items()}

    async def key_inflight(self, pool: str, key: str) -> int:
        return len(_expire(self._slots[self._slot_names(pool, key, "")[0]], time.time()))

    async def idem_begin(self, name: str, body_hash: str) -> IdemRecord | None:
        now = time.time()
        if len(self._idem) > IDEM_SWEEP_AT:
            self._idem = {k: v for k, v in self._idem.items() if v[1] > now}
        held = self._idem.get(name)
        if held is not None and held[1] > now:
            return held[0]
        self._idem[name] = (IdemRecord("pending", body_hash, b""), now + PENDING_TTL_S)
        return None

    async def idem_finish(self, name: str, response: bytes) -> None:
        held = self._idem.get(name)
        if held is not None:
            self._idem[name] = (
                IdemRecord("done", held[0].body_hash, response),
                time.time() + DONE_TTL_S,
            )

    async def idem_drop(self, name: str) -> None:
        self._idem.pop(name, None)

    async def usage_add(self, team: str, day: str, counts: dict[str, int]) -> None:
        bucket = self._usage[team].setdefault(day, {})
        for name, value in counts.items():
            bucket[name] = bucket.get(name, 0) + value

    async def usage_get(self, team: str, days: list[str]) -> dict[str, dict[str, int]]:
        stored = self._usage.get(team, {})
        return {day: dict(stored[day]) for day in days if day in stored}

    async def index_add(self, name: str, member: str, score: float) -> None:
        self._indexes[name].add(member, score)

    async def index_page(
        self, name: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        index = self._indexes.get(name)
        return index.page(before, limit) if index is not None else []

    async def index_remove(self, name: str, members: list[str]) -> None:
        index = self._indexes.get(name)
        if index is not None:
            for member in members:
                index.remove(member)

    async def list_push(self, name: str, item: bytes, keep: int) -> None:
        items = self._lists.get(name)
        if items is None or items.maxlen != keep:
            items = self._lists[name] = deque(items or (), maxlen=keep)
        items.appendleft(item)

    async def list_read(self, name: str, limit: int) -> list[bytes]:
        return list(self._lists.get(name, ()))[:limit]

    async def lock(self, name: str, owner: str, ttl_s: float) -> bool:
        now = time.time()
        held = self._locks.get(name)
        if held is None or held[0] == owner or held[1] <= now:
            self._locks[name] = (owner, now + ttl_s)
            return True
        return False

    async def unlock(self, name: str, owner: str) -> None:
        if self._locks.get(name, ("", 0.0))[0] == owner:
            del self._locks[name]

    async def ping(self) -> bool:
        return True


class SortedIndex:
    """Members kept in score order, so a page is one bisection and a slice."""

    def __init__(self) -> None:
        self._entries: list[tuple[float, str]] = []
        self._scores: dict[str, float] = {}

    def add(self, member: str, score: float) -> None:
        self.remove(member)
        self._scores[member] = score
        bisect.insort(self._entries, (score, member))

    def remove(self, member: str) -> None:
        score = self._scores.pop(member, None)
        if score is not None:
            del self._entries[bisect.bisect_left(self._entries, (score, member))]

    def page(self, before: float | None, limit: int) -> list[tuple[str, float]]:
        end = len(self._entries) if before is None else bisect.bisect_left(self._entries, (before,))
        chosen = self._entries[max(0, end - limit) : end]
        return [(member, score) for score, member in reversed(chosen)]
