"""The moment an upstream accepted a job: from then on it may be charged, so it is recorded.

A BFL upstream reports its polling URL here; a running async job listens (a context variable
set around its run) and stores it, so another replica can resume the job by polling instead
of submitting again. Synchronous requests set no listener and nothing is stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Accepted:
    upstream: str
    key_fingerprint: str
    polling_url: str
    cost_micros: int | None


Listener = Callable[[Accepted], Awaitable[None]]
listener: ContextVar[Listener | None] = ContextVar("job_accepted_listener", default=None)


async def report(accepted: Accepted) -> None:
    """Tell the running job, if any, that its upstream accepted it."""
    hear = listener.get()
    if hear is not None:
        await hear(accepted)
