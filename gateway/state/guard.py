"""`state.on_redis_error`: what happens to requests while the shared state cannot be reached.

fail-closed answers 503 (`StateUnavailable`); fail-open serves on this process's own memory
state (limits then hold per replica only). Either way every failure is counted in a metric
and logged at most once per interval, and the primary is tried again on the next call, so the
gateway recovers by itself. What was reserved or leased on the fallback remembers it (`Held`):
it is settled, renewed and released there, also once the primary is back, since only its own
backend can give it back.

One wrapper serves every ability: `guarded(primary, fallback)` is typed as the ability it
wraps, and each call takes one of two paths, by its first argument.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from gateway.errors import StateUnavailable
from gateway.metrics import Metrics
from gateway.state.base import State
from gateway.state.holds import BackendName, Held

log = logging.getLogger("gateway.state")
LOG_INTERVAL_S = 30.0
P = TypeVar("P")


class Failures:
    """Counts and (rate-limited) logs primary failures; under fail-closed raises the 503."""

    def __init__(self, fail_open: bool, metrics: Metrics) -> None:
        self.fail_open = fail_open
        self.metrics = metrics
        self._last_log = 0.0

    def failed(self, exc: StateUnavailable) -> None:
        mode = "fail-open" if self.fail_open else "fail-closed"
        self.metrics.state_errors.labels(mode=mode).inc()
        now = time.monotonic()
        if now - self._last_log >= LOG_INTERVAL_S:
            self._last_log = now
            log.error("state backend unavailable", extra={"mode": mode, "error": str(exc)})
        if not self.fail_open:
            raise StateUnavailable(
                "The gateway's shared state is unavailable; try again shortly.",
                headers={"retry-after": "1"},
            ) from exc


def _holds(first: object) -> list[Held] | None:
    """The reservations or slots a call's first argument names, if it names any."""
    if isinstance(first, Held):
        return [first]
    if isinstance(first, list) and first and all(isinstance(h, Held) for h in first):
        return first
    return None


class _Guarded:
    """An ability's every method, guarded (see the module docstring); attributes pass through."""

    def __init__(
        self, primary: object, fallback: object, fallback_name: BackendName, failures: Failures
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._fallback_name = fallback_name
        self._failures = failures

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._primary, name)
        if not inspect.iscoroutinefunction(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            held = _holds(args[0]) if args else None
            if held is None:
                return await self._either(name, args, kwargs)
            single = not isinstance(args[0], list)
            for part in self._by_holder(held):
                await self._where_held(name, part[0] if single else part, args[1:], kwargs)
            return None

        setattr(self, name, call)
        return call

    def _by_holder(self, held: list[Held]) -> list[list[Held]]:
        """The fallback's part first, then the primary's; empty parts left out."""
        mine = [h for h in held if h.backend == self._fallback_name]
        rest = [h for h in held if h.backend != self._fallback_name]
        return [part for part in (mine, rest) if part]

    async def _either(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The primary answers; if it cannot, the failure counts and the fallback answers."""
        try:
            return await getattr(self._primary, name)(*args, **kwargs)
        except StateUnavailable as exc:
            self._failures.failed(exc)
        return await getattr(self._fallback, name)(*args, **kwargs)

    async def _where_held(
        self, name: str, first: object, rest: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        """Settle, renew or release on the backend holding it."""
        part = first if isinstance(first, list) else [first]
        if cast(Held, part[0]).backend == self._fallback_name:
            await getattr(self._fallback, name)(first, *rest, **kwargs)
            return
        try:
            await getattr(self._primary, name)(first, *rest, **kwargs)
        except StateUnavailable as exc:
            # Held on the primary: its lease expires there and gives it back.
            self._failures.failed(exc)


def guarded(primary: P, fallback: P, fallback_name: BackendName, failures: Failures) -> P:
    """`primary` guarded by `fallback`, typed as the ability both implement."""
    return cast(P, _Guarded(primary, fallback, fallback_name, failures))


def guard_state(primary: State, fallback: State, failures: Failures) -> State:
    """Every ability of `primary` guarded by the same ability of `fallback`; ping and close
    reach the primary only."""

    def part(ability: Callable[[State], P]) -> P:
        return guarded(ability(primary), ability(fallback), fallback.backend, failures)

    return State(
        primary.backend,
        part(lambda s: s.admission),
        part(lambda s: s.keys),
        part(lambda s: s.idempotency),
        part(lambda s: s.usage),
        part(lambda s: s.listings),
        part(lambda s: s.locks),
        part(lambda s: s.jobs),
        # Unguarded: the webhook worker keeps what Redis cannot take on its own replica, and
        # a delivery put on the fallback would be stranded there once Redis is back.
        primary.deliveries,
        primary.link,
    )
