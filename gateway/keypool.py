"""One upstream's keys: health, cooldowns, per-key concurrency slots, and the choice among them.

The healthy key with the fewest jobs in flight wins; a key at its cap is skipped; when every
key is busy a request waits a bounded time for a slot. A 429 cools a key (honouring
Retry-After), a bad or empty key is disabled and re-checked later, and a streak of failures
cools a key that keeps failing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.errors import UpstreamRejected
from gateway.keys import fingerprint
from gateway.metrics import Metrics

FIRST_COOLDOWN_S = 5.0
MAX_COOLDOWN_S = 300.0
STREAK_LIMIT = 3
STREAK_COOLDOWN_S = 30.0
RECHECK_S = 60.0

KeyCheck = Callable[[str], Awaitable[bool]]


@dataclass
class KeyState:
    key: str
    fingerprint: str
    inflight: int = 0
    per_model: Counter[str] = field(default_factory=Counter)
    disabled: bool = False
    cooldown_until: float = 0.0
    cooldowns_in_row: int = 0
    failures_in_row: int = 0
    recheck_at: float = 0.0
    last_error: str | None = None

    def state(self, now: float) -> str:
        if self.disabled:
            return "disabled"
        return "cooling" if self.cooldown_until > now else "healthy"


@dataclass
class Lease:
    key: KeyState
    model: str


class KeyPool:
    def __init__(
        self,
        upstream: str,
        keys: list[str],
        max_per_key: int,
        metrics: Metrics,
        model_caps: dict[str, int] | None = None,
        wait_s: float = 30.0,
        check: KeyCheck | None = None,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self.upstream = upstream
        self.keys = [KeyState(k, fingerprint(k)) for k in keys]
        self.max_per_key = max_per_key
        self.model_caps = model_caps or {}
        self.metrics = metrics
        self.wait_s = wait_s
        self.check = check
        self.recheck_s = recheck_s
        self._freed = asyncio.Condition()
        self._checks: set[asyncio.Task[None]] = set()
        for k in self.keys:
            self._publish(k)

    def _publish(self, key: KeyState) -> None:
        self.metrics.set_key_state(self.upstream, key.fingerprint, key.state(time.time()))

    def _has_slot(self, key: KeyState, model: str) -> bool:
        cap = self.model_caps.get(model)
        return key.inflight < self.max_per_key and (cap is None or key.per_model[model] < cap)

    def usable(self, now: float | None = None) -> list[KeyState]:
        now = time.time() if now is None else now
        return [k for k in self.keys if k.state(now) == "healthy"]

    def retry_after(self) -> float:
        """Seconds until some key may be usable again."""
        now = time.time()
        waits = [k.cooldown_until - now for k in self.keys if not k.disabled]
        waits += [k.recheck_at - now for k in self.keys if k.disabled]
        return max(1.0, min(waits, default=self.recheck_s))

    async def acquire(self, model: str, exclude: set[str] = frozenset()) -> Lease:  # type: ignore[assignment]
        """A slot on the least busy healthy key, waiting up to `wait_s` while all are busy."""
        deadline = time.monotonic() + self.wait_s
        async with self._freed:
            while True:
                self._recheck_due()
                usable = [k for k in self.usable() if k.fingerprint not in exclude]
                if not usable:
                    raise UpstreamRejected("unavailable", "no usable key", self.retry_after())
                free = [k for k in usable if self._has_slot(k, model)]
                if free:
                    key = min(free, key=lambda k: k.inflight)
                    key.inflight += 1
                    key.per_model[model] += 1
                    return Lease(key, model)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UpstreamRejected("busy", "every key is at its concurrency cap", 1.0)
                try:
                    await asyncio.wait_for(self._freed.wait(), min(remaining, 1.0))
                except TimeoutError:
                    continue

    async def release(self, lease: Lease) -> None:
        lease.key.inflight -= 1
        lease.key.per_model[lease.model] -= 1
        async with self._freed:
            self._freed.notify_all()

    def succeeded(self, lease: Lease) -> None:
        key = lease.key
        key.failures_in_row = 0
        key.cooldowns_in_row = 0

    def rate_limited(self, lease: Lease, retry_after: float | None) -> None:
        key = lease.key
        if retry_after is None:
            retry_after = min(MAX_COOLDOWN_S, FIRST_COOLDOWN_S * 2**key.cooldowns_in_row)
        key.cooldowns_in_row += 1
        self._cool(key, retry_after, "rate limited (429)")

    def failed(self, lease: Lease, detail: str) -> None:
        """A failure after the job may have started: three in a row cool the key."""
        key = lease.key
        key.failures_in_row += 1
        key.last_error = detail
        if key.failures_in_row >= STREAK_LIMIT:
            key.failures_in_row = 0
            self._cool(key, STREAK_COOLDOWN_S, detail)

    def disable(self, lease: Lease, detail: str) -> None:
        key = lease.key
        key.disabled = True
        key.recheck_at = time.time() + self.recheck_s
        key.last_error = detail
        self._publish(key)

    def enable(self, fp: str) -> bool:
        for key in self.keys:
            if key.fingerprint == fp:
                key.disabled = False
                key.cooldown_until = 0.0
                key.failures_in_row = 0
                self._publish(key)
                return True
        return False

    def _cool(self, key: KeyState, seconds: float, detail: str) -> None:
        key.cooldown_until = time.time() + seconds
        key.last_error = detail
        self._publish(key)
        asyncio.get_running_loop().call_later(seconds, self._publish, key)

    def _recheck_due(self) -> None:
        """Disabled keys past their re-check time get one check (or, without one, a trial)."""
        now = time.time()
        for key in self.keys:
            if key.disabled and key.recheck_at <= now:
                key.recheck_at = now + self.recheck_s
                if self.check is None:
                    key.disabled = False
                    self._publish(key)
                else:
                    task = asyncio.create_task(self._run_check(key, self.check))
                    self._checks.add(task)
                    task.add_done_callback(self._checks.discard)

    async def _run_check(self, key: KeyState, check: KeyCheck) -> None:
        if await check(key.key):
            key.disabled = False
            self._publish(key)
            async with self._freed:
                self._freed.notify_all()
