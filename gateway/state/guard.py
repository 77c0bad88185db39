"""`state.on_redis_error`: what happens to requests while the shared state cannot be reached.

fail-closed answers 503; fail-open serves on this process's own memory state (limits then hold
per replica only), counts every failure in a metric and logs at most once per interval. Either
way the primary is tried again on the next call, so the gateway recovers by itself. What was
admitted or acquired on the fallback is settled, renewed and released there too, also once the
primary is back: the reservation lives there, and only its own backend can give it back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.errors import ServiceUnavailable, StateUnavailable
from gateway.metrics import Metrics
from gateway.state.base import Admission, Counters, KeyChoice, Limits, SlotCaps, State
from gateway.state.memory import MemoryState

log = logging.getLogger("gateway.state")
LOG_INTERVAL_S = 30.0
T = TypeVar("T")


class GuardedState(State):
    def __init__(self, primary: State, fail_open: bool, metrics: Metrics) -> None:
        self.primary = primary
        self.fallback = MemoryState(primary.lease_s)
        self.fail_open = fail_open
        self.metrics = metrics
        self.lease_s = primary.lease_s
        self._last_log = 0.0
        self._on_fallback: set[str] = set()
        """Request and lease ids admitted or acquired on the fallback, until settled/released."""

    def _failed(self, exc: StateUnavailable) -> None:
        """Count and (rate-limited) log a failure; fail-closed then answers 503."""
        mode = "fail-open" if self.fail_open else "fail-closed"
        self.metrics.state_errors.labels(mode=mode).inc()
        now = time.monotonic()
        if now - self._last_log >= LOG_INTERVAL_S:
            self._last_log = now
            log.error("state backend unavailable", extra={"mode": mode, "error": str(exc)})
        if not self.fail_open:
            raise ServiceUnavailable(
                "The gateway's shared state is unavailable; try again shortly.",
                code="state_unavailable",
                headers={"retry-after": "1"},
            ) from exc

    async def _guard(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await self._guard_call(lambda state: getattr(state, name)(*args, **kwargs))

    async def _guard_call(self, call: Callable[[State], Awaitable[T]]) -> T:
        try:
            return await call(self.primary)
        except StateUnavailable as exc:
            self._failed(exc)
            return await call(self.fallback)

    async def _split(
        self, ids: list[str], call: Callable[[State, list[str]], Awaitable[None]]
    ) -> None:
        """Run `call` for each backend with the ids it holds (renewals)."""
        mine = [i for i in ids if i in self._on_fallback]
        if mine:
            await call(self.fallback, mine)
        rest = [i for i in ids if i not in self._on_fallback]
        if rest:
            await self._guard_call(lambda state: call(state, rest))

    async def admit(
        self, names: Counters, request_id: str, limits: Limits, images: int, cost_micros: int
    ) -> Admission:
        try:
            return await self.primary.admit(names, request_id, limits, images, cost_micros)
        except StateUnavailable as exc:
            self._failed(exc)
        verdict = await self.fallback.admit(names, request_id, limits, images, cost_micros)
        if verdict.refused is None:
            self._on_fallback.add(request_id)
        return verdict

    async def settle(
        self, names: Counters, request_id: str, images_used: int, micros_used: int
    ) -> None:
        if request_id in self._on_fallback:
            self._on_fallback.discard(request_id)
            await self.fallback.settle(names, request_id, images_used, micros_used)
            return
        try:
            await self.primary.settle(names, request_id, images_used, micros_used)
        except StateUnavailable as exc:
            # The reservation is on the primary: its lease expires there and gives it back.
            self._failed(exc)

    async def renew(self, team: str, request_ids: list[str]) -> None:
        await self._split(request_ids, lambda state, ids: state.renew(team, ids))

    async def counters_read(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("counters_read", *args, **kwargs)

    async def key_acquire(
        self, pool: str, keys: list[str], model: str, lease_id: str, caps: SlotCaps
    ) -> KeyChoice:
        try:
            return await self.primary.key_acquire(pool, keys, model, lease_id, caps)
        except StateUnavailable as exc:
            self._failed(exc)
        choice = await self.fallback.key_acquire(pool, keys, model, lease_id, caps)
        if choice.index is not None:
            self._on_fallback.add(lease_id)
        return choice

    async def key_release(self, pool: str, key: str, model: str, lease_id: str) -> None:
        if lease_id in self._on_fallback:
            self._on_fallback.discard(lease_id)
            await self.fallback.key_release(pool, key, model, lease_id)
            return
        await self._guard("key_release", pool, key, model, lease_id)

    async def key_renew(self, pool: str, key: str, model: str, lease_ids: list[str]) -> None:
        await self._split(lease_ids, lambda state, ids: state.key_renew(pool, key, model, ids))

    async def pool_inflight(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("pool_inflight", *args, **kwargs)

    async def key_event(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("key_event", *args, **kwargs)

    async def key_info(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("key_info", *args, **kwargs)

    async def key_inflight(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("key_inflight", *args, **kwargs)

    async def idem_begin(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("idem_begin", *args, **kwargs)

    async def idem_finish(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("idem_finish", *args, **kwargs)

    async def idem_drop(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("idem_drop", *args, **kwargs)

    async def usage_add(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("usage_add", *args, **kwargs)

    async def usage_get(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("usage_get", *args, **kwargs)

    async def index_add(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("index_add", *args, **kwargs)

    async def index_page(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("index_page", *args, **kwargs)

    async def index_remove(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("index_remove", *args, **kwargs)

    async def list_push(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("list_push", *args, **kwargs)

    async def list_read(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("list_read", *args, **kwargs)

    async def lock(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("lock", *args, **kwargs)

    async def unlock(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("unlock", *args, **kwargs)

    async def ping(self) -> bool:
        return await self.primary.ping()

    async def aclose(self) -> None:
        await self.primary.aclose()
