"""`state.on_redis_error`: what happens to requests while the shared state cannot be reached.

fail-closed answers 503; fail-open serves on this process's own memory state (limits then hold
per replica only), counts every failure in a metric and logs at most once per interval. Either
way the primary is tried again on the next call, so the gateway recovers by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.errors import ServiceUnavailable
from gateway.metrics import Metrics
from gateway.state.base import State, StateUnavailable
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

    async def _guard(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.primary, name)(*args, **kwargs)
        except StateUnavailable as exc:
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
            method: Callable[..., Awaitable[Any]] = getattr(self.fallback, name)
            return await method(*args, **kwargs)

    async def admit(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("admit", *args, **kwargs)

    async def settle(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("settle", *args, **kwargs)

    async def renew(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("renew", *args, **kwargs)

    async def counters_read(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("counters_read", *args, **kwargs)

    async def key_acquire(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("key_acquire", *args, **kwargs)

    async def key_release(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("key_release", *args, **kwargs)

    async def key_renew(self, *args: Any, **kwargs: Any) -> Any:
        return await self._guard("key_renew", *args, **kwargs)

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
