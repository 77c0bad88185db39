"""One upstream's keys: health, cooldowns, per-key concurrency slots, and the choice among them.

Slots and key health live in the state layer, so every replica sees the same pool: the healthy
key with the fewest jobs in flight wins (one atomic call), a key at its cap is skipped, every key
is skipped while the account (the whole pool) is at its own cap, and when every key is busy a
request waits a bounded time for a slot. A 429 cools a key (honouring
Retry-After), a bad or empty key is disabled and re-checked periodically, and a streak of
failures cools a key that keeps failing. Slots are leases: renewed while a job runs, so a
killed replica's slots expire. Keys are named in shared state by fingerprint only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.errors import GatewayError, UpstreamRejected
from gateway.ids import unique_hex
from gateway.keys import fingerprint
from gateway.metrics import Metrics
from gateway.state.keys.base import KeyEvent, KeySlots, KeyStatus, Slot, SlotCaps, Streak

RECHECK_S = 60.0
MAX_RECHECK_S = 3600.0
BUSY_POLL_S = 0.25
MAX_REFRESH_S = 2.0
STREAK = Streak(failures=3, cooldown_s=30.0)
"""Three failures in a row cool a key for 30 s."""

KeyCheck = Callable[[str], Awaitable[bool]]
log = logging.getLogger("gateway.keypool")


@dataclass
class PoolKey:
    """This process's view of one key; the truth is in the state layer."""

    key: str
    fingerprint: str
    disabled: bool = False
    cooldown_until: float = 0.0
    recheck_at: float = 0.0
    last_error: str | None = None
    troubled: bool = False
    disables: int = 0
    """Disables in a row without a success between them: each doubles the next re-check."""

    def state(self, now: float) -> str:
        if self.disabled:
            return "disabled"
        return "cooling" if self.cooldown_until > now else "healthy"


@dataclass(frozen=True)
class Lease:
    key: PoolKey
    slot: Slot

    @property
    def model(self) -> str:
        return self.slot.model


class KeyPool:
    def __init__(
        self,
        upstream: str,
        keys: list[str],
        max_per_key: int,
        metrics: Metrics,
        slots: KeySlots,
        model_caps: dict[str, int] | None = None,
        account_cap: int | None = None,
        wait_s: float = 30.0,
        check: KeyCheck | None = None,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self.upstream = upstream
        self.keys = [PoolKey(k, fingerprint(k)) for k in keys]
        self.max_per_key = max_per_key
        self.metrics = metrics
        self.slots = slots
        self.model_caps = model_caps or {}
        """Jobs of one model in flight across all keys of the account (BFL: kontext-max 6)."""
        self.account_cap = account_cap
        """Jobs in flight across all keys of the account (one `[[upstreams]]` entry)."""
        self.wait_s = wait_s
        self.check = check
        self.recheck_s = recheck_s
        self._held: dict[str, Lease] = {}
        self._freed = asyncio.Condition()
        self._turn = itertools.count()
        for key in self.keys:
            self._publish(key)

    def _publish(self, key: PoolKey) -> None:
        self.metrics.set_key_state(self.upstream, key.fingerprint, key.state(time.time()))

    def _retry_after(self) -> float:
        """Seconds until this process expects some key to be usable again."""
        now = time.time()
        waits = [(k.recheck_at if k.disabled else k.cooldown_until) - now for k in self.keys]
        return max(1.0, min(waits, default=1.0))

    def usable(self) -> list[PoolKey]:
        now = time.time()
        return [k for k in self.keys if k.state(now) == "healthy"]

    async def acquire(self, model: str, exclude: frozenset[str] | set[str] = frozenset()) -> Lease:
        """A slot on the least busy healthy key, waiting up to `wait_s` while all are busy
        (every key at its cap, or the account at its own)."""
        deadline = time.monotonic() + self.wait_s
        candidates = [k for k in self.keys if k.fingerprint not in exclude]
        if not candidates:
            raise UpstreamRejected("unavailable", "no untried key", self._retry_after())
        shift = next(self._turn) % len(candidates)
        candidates = candidates[shift:] + candidates[:shift]
        while True:
            lease_id = unique_hex()
            caps = SlotCaps(self.max_per_key, self.account_cap, self.model_caps.get(model))
            choice = await self.slots.key_acquire(
                self.upstream, [k.fingerprint for k in candidates], model, lease_id, caps
            )
            if choice.index is not None and choice.slot is not None:
                lease = Lease(candidates[choice.index], choice.slot)
                self._held[lease_id] = lease
                return lease
            if not choice.busy:
                raise UpstreamRejected(
                    "unavailable", "no usable key", max(choice.retry_after_s, 1.0)
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamRejected("busy", "every key is at its concurrency cap", 1.0)
            async with self._freed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), min(remaining, BUSY_POLL_S))

    async def release(self, lease: Lease) -> None:
        self._held.pop(lease.slot.lease_id, None)
        await self._quietly(self.slots.key_release(lease.slot))
        async with self._freed:
            self._freed.notify_all()

    async def _event(
        self, key: PoolKey, event: KeyEvent, seconds: float = -1, detail: str = ""
    ) -> KeyStatus:
        status = await self.slots.key_event(
            self.upstream, key.fingerprint, event, STREAK, seconds, detail
        )
        before = key.state(time.time())
        key.disabled = status.disabled
        key.cooldown_until = status.cooldown_until
        if detail:
            key.last_error = detail
        after = key.state(time.time())
        self._publish(key)
        if before != after:
            log.warning(
                "upstream key state changed",
                extra={
                    "upstream": self.upstream,
                    "key_fingerprint": key.fingerprint,
                    "from": before,
                    "to": after,
                    "reason": detail or event,
                },
            )
        return status

    async def succeeded(self, lease: Lease) -> None:
        """Reset the key's streaks, with a state call only when it had any."""
        if lease.key.troubled:
            lease.key.troubled = False
            lease.key.disables = 0
            await self._quietly(self._event(lease.key, "ok"))

    async def rate_limited(self, lease: Lease, retry_after: float | None) -> None:
        lease.key.troubled = True
        seconds = -1 if retry_after is None else retry_after
        await self._quietly(self._event(lease.key, "rate_limited", seconds, "rate limited (429)"))

    async def failed(self, lease: Lease, detail: str) -> None:
        """A failure after the job may have started: a streak of them cools the key."""
        lease.key.troubled = True
        await self._quietly(self._event(lease.key, "failed", detail=detail))

    async def disable(self, lease: Lease, detail: str) -> None:
        """Take a key out until its re-check: `recheck_s`, doubling while it keeps failing.

        A kind without a cheap check (the aggregator has no credits endpoint) re-enables the key
        for a trial job at its re-check; a trial refused again disables it for twice as long,
        up to MAX_RECHECK_S, so a dead key costs one quick refusal per interval, never a loop.
        """
        key = lease.key
        key.troubled = True
        wait = min(self.recheck_s * 2**key.disables, MAX_RECHECK_S)
        key.disables += 1
        key.recheck_at = time.time() + wait
        await self._quietly(self._event(key, "disable", wait, detail))

    async def _quietly(self, call: Awaitable[object]) -> None:
        """Bookkeeping after a job must never cost its result: a state outage is logged, and
        the lease or key state it would have written expires or is re-learned later."""
        try:
            await call
        except GatewayError as exc:
            log.warning(
                "key pool bookkeeping skipped", extra={"upstream": self.upstream, "error": str(exc)}
            )

    async def enable(self, fp: str) -> bool:
        for key in self.keys:
            if key.fingerprint == fp:
                await self._event(key, "enable")
                return True
        return False

    async def maintain(self) -> None:
        """Renew held slots, refresh the view of every key, and re-check disabled keys."""
        await self.slots.key_renew([lease.slot for lease in self._held.values()])
        now = time.time()
        for key in self.keys:
            status = await self.slots.key_status(self.upstream, key.fingerprint)
            key.disabled = status.disabled
            key.cooldown_until = status.cooldown_until
            key.recheck_at = status.recheck_at
            key.last_error = status.last_error or key.last_error
            self._publish(key)
            if key.disabled and key.recheck_at <= now:
                await self._recheck(key)

    async def _recheck(self, key: PoolKey) -> None:
        if not await self.slots.key_claim_recheck(self.upstream, key.fingerprint, self.recheck_s):
            return
        if self.check is None or await self.check(key.key):
            await self._event(key, "enable")
            async with self._freed:
                self._freed.notify_all()

    async def inflight(self, key: PoolKey) -> int:
        return await self.slots.key_inflight(self.upstream, key.fingerprint)

    def refresh_interval(self) -> float:
        return min(self.slots.lease_s / 3, self.recheck_s, MAX_REFRESH_S)

    async def run_maintenance(self) -> None:
        """The background loop; state outages are logged by the state layer and skipped here."""
        while True:
            await asyncio.sleep(self.refresh_interval())
            try:
                await self.maintain()
            except GatewayError:
                continue
