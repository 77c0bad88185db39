"""How long one request may wait on the shared state, in total, across all of its calls.

A stalled Redis (a paused process, a full network buffer) answers nothing and refuses nothing;
each call then waits its whole timeout. A request makes several calls (idempotency, admission,
key slots, settlement, usage), so a per-call timeout alone lets it wait many times over. The
request's `Budget` (a context variable, shared by the tasks the request starts) holds the time
left: each call is cut to what remains and consumes what it waited, and once it is spent the
remaining calls fail at once, without sending anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import Context, ContextVar
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import StateUnavailable


class Budget:
    """Seconds of waiting on the shared state a request has left."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds


class BudgetSpent(StateUnavailable):
    """The request already waited its whole budget: this call was not sent."""


_current: ContextVar[Budget | None] = ContextVar("state_budget", default=None)


@contextmanager
def request_budget(seconds: float) -> Iterator[Budget]:
    """Give the code inside (one request) `seconds` of shared-state time in total."""
    budget = Budget(seconds)
    previous = _current.get()
    _current.set(budget)
    try:
        yield budget
    finally:
        # Not `reset(token)`: a request cancelled at shutdown may be closed from another
        # context, where a token of this one cannot be used.
        _current.set(previous)


@asynccontextmanager
async def bounded(timeout_s: float) -> AsyncIterator[None]:
    """One state call: at most `timeout_s`, and at most what the request's budget has left."""
    budget = _current.get()
    limit = timeout_s if budget is None else min(timeout_s, budget.left)
    if limit <= 0:
        raise BudgetSpent("redis: this request's time for the shared state is spent")
    started = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            yield
    finally:
        if budget is not None:
            budget.left -= time.monotonic() - started


def detached(call: Callable[[], Awaitable[Any]], tasks: set[asyncio.Task[Any]]) -> None:
    """Run `call` in the background outside any request's budget (cleanup after a lost answer),
    keeping a reference in `tasks` until it ends."""

    async def run() -> None:
        try:
            await call()
        except StateUnavailable:
            return

    task = asyncio.get_running_loop().create_task(run(), context=Context())
    tasks.add(task)
    task.add_done_callback(tasks.discard)


class StateBudget:
    """Pure ASGI middleware: every HTTP request gets `seconds` of shared-state time in all."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with request_budget(self.seconds):
            await self.app(scope, receive, send)
