"""The state layer: what replicas must share, as a few small abilities on one backend.

Each ability is one protocol with its memory and Redis implementations beside it
(`admission/`, `keys/`, `idempotency/`, `records/`, `locks/`, `jobs/`); a `State` holds one of each,
all on the same backend, or guarded pairs of them (`guard.py`). Callers are handed the ability
they use. The layer knows nothing of teams or upstreams: it keeps counters, windows, leases
and records under names it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.state.admission.base import AdmissionCounters
from gateway.state.deliveries.base import Deliveries
from gateway.state.holds import BackendName
from gateway.state.idempotency.base import IdempotencyRecords
from gateway.state.jobs.base import JobStore
from gateway.state.keys.base import KeySlots
from gateway.state.locks.base import Locks
from gateway.state.records.base import Listings, UsageCounts


class Link(Protocol):
    """The backend itself: whether it answers, and closing it."""

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


class NoLink:
    """Memory state: nothing to reach, nothing to close."""

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


@dataclass(frozen=True)
class State:
    backend: BackendName
    admission: AdmissionCounters
    keys: KeySlots
    idempotency: IdempotencyRecords
    usage: UsageCounts
    listings: Listings
    locks: Locks
    jobs: JobStore
    deliveries: Deliveries
    link: Link

    async def ping(self) -> bool:
        return await self.link.ping()

    async def aclose(self) -> None:
        await self.link.aclose()
