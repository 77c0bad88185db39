"""Admission counters in this process: exact within it, nothing to run."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass

from gateway.state.admission.base import (
    SETTLED_TTL_S,
    Admission,
    Counters,
    CounterValues,
    Limits,
    Reservation,
)

WINDOW_S = 60.0


def expire(leases: dict[str, float], now: float) -> dict[str, float]:
    """Drop the leases whose time is up; the same dict, for chaining."""
    for lease_id in [k for k, until in leases.items() if until <= now]:
        del leases[lease_id]
    return leases


@dataclass(frozen=True)
class _Held:
    """What one admitted request holds, and the counters it holds it in."""

    images: int
    micros: int
    day_key: str
    month_key: str


class MemoryAdmission:
    def __init__(self, lease_s: float = 30.0) -> None:
        self.lease_s = lease_s
        self._windows: dict[str, deque[float]] = defaultdict(deque)
        self._inflight: dict[str, dict[str, float]] = defaultdict(dict)
        self._counters: dict[str, int] = defaultdict(int)
        self._reservations: dict[str, dict[str, _Held]] = defaultdict(dict)
        self._settled: dict[str, dict[str, float]] = defaultdict(dict)

    async def admit(
        self, names: Counters, request_id: str, limits: Limits, images: int, cost_micros: int
    ) -> Admission:
        now = time.time()
        if request_id in expire(self._settled[names.team], now):
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
        self._reservations[names.team][request_id] = _Held(images, cost_micros, day_key, month_key)
        self._counters[day_key] += images
        self._counters[month_key] += cost_micros
        held = Reservation(names, request_id, "memory")
        return Admission(None, window[0] + WINDOW_S - now, rpm - len(window), held)

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

    async def settle(self, held: Reservation, images_used: int, micros_used: int) -> None:
        names, request_id = held.names, held.request_id
        self._inflight[names.team].pop(request_id, None)
        kept = self._reservations[names.team].pop(request_id, None)
        if kept is None:
            self._settled[names.team][request_id] = time.time() + SETTLED_TTL_S
        for key, delta in (
            (f"{names.team}:{names.day}", images_used - (kept.images if kept else 0)),
            (f"{names.team}:{names.month}", micros_used - (kept.micros if kept else 0)),
        ):
            self._counters[key] = max(self._counters[key] + delta, 0)

    async def renew(self, held: list[Reservation]) -> None:
        until = time.time() + self.lease_s
        for one in held:
            leases = self._inflight[one.names.team]
            if one.request_id in leases:
                leases[one.request_id] = until

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
