"""Admission counters: check every limit and reserve in one step, then settle what was used.

The names under which a request is counted come from the caller (`Counters`); the layer does
not know they belong to a team.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from gateway.state.holds import BackendName

SETTLED_TTL_S = 600.0
"""How long a settlement made before its admission arrived keeps that admission out."""


@dataclass(frozen=True)
class Limits:
    """The limits one admission is checked against; None means unlimited."""

    rpm: int | None
    max_concurrency: int | None
    images_per_day: int | None
    budget_micros: int | None


@dataclass(frozen=True)
class Counters:
    """The names one request is counted under: `team` names the window and the leases, `day`
    and `month` (with it) the image and spend counters."""

    team: str
    day: str
    month: str


@dataclass(frozen=True)
class Reservation:
    """An admitted request's lease and quota, held by `backend`: settle and renew it there."""

    names: Counters
    request_id: str
    backend: BackendName


@dataclass(frozen=True)
class Admission:
    """`refused` is None when admitted (then `reservation` is set), else rpm | concurrency |
    images | budget | settled."""

    refused: str | None
    retry_after_s: float
    remaining_requests: int
    reservation: Reservation | None = None


@dataclass(frozen=True)
class CounterValues:
    """What the counters under one `Counters` hold now (read, never reserved)."""

    window_requests: int
    window_reset_s: float
    in_flight: int
    day_images: int
    month_micros: int


class AdmissionCounters(Protocol):
    """Sliding one-minute windows, leases and day/month counters under given names."""

    lease_s: float
    """How long a lease lives unless renewed: a dead process's requests expire after it."""

    async def admit(
        self, names: Counters, request_id: str, limits: Limits, images: int, cost_micros: int
    ) -> Admission:
        """Check every limit and, only if all pass, reserve one request, a lease and the quota."""
        ...

    async def settle(self, held: Reservation, images_used: int, micros_used: int) -> None:
        """Free the request's lease and charge exactly what it used.

        What its stored reservation still holds is given back and what was used is counted, so
        a reservation lost to a Redis restart (or given back when its lease expired) gives back
        nothing, and counters never go below 0. A settlement that finds no reservation keeps a
        late admission of the same request out (its answer was lost; it must not take a lease).
        """
        ...

    async def renew(self, held: list[Reservation]) -> None:
        """Extend the leases of requests this process is still running."""
        ...

    async def counters_read(self, names: Counters) -> CounterValues:
        """The live values `admit` checks, without admitting anything (for the console)."""
        ...
