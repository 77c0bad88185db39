"""The state layer: everything replicas must share, behind one interface.

Two implementations: `MemoryState` (one process, no server) and `RedisState` (atomic Lua
scripts, one round trip per admission). The layer knows nothing of teams or upstreams as
concepts: it keeps counters, windows, leases and records under names it is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

PENDING_TTL_S = 900.0
DONE_TTL_S = 24 * 3600.0
USAGE_TTL_S = 400 * 86400.0
SETTLED_TTL_S = 600.0
"""How long a settlement made before its admission arrived keeps that admission out."""


@dataclass(frozen=True)
class Limits:
    """A team's limits; None means unlimited."""

    rpm: int | None
    max_concurrency: int | None
    images_per_day: int | None
    budget_micros: int | None


@dataclass(frozen=True)
class Admission:
    """`refused` is None when admitted, else rpm | concurrency | images | budget."""

    refused: str | None
    retry_after_s: float
    remaining_requests: int


@dataclass(frozen=True)
class Counters:
    """The names under which one team's request is counted: window, leases, day, month."""

    team: str
    day: str
    month: str


@dataclass(frozen=True)
class CounterValues:
    """What the counters under one `Counters` hold now (read, never reserved)."""

    window_requests: int
    window_reset_s: float
    in_flight: int
    day_images: int
    month_micros: int


@dataclass(frozen=True)
class SlotCaps:
    """Jobs one key may run, and the account-wide caps across all keys of a pool (None: none).

    `model` caps one model across the account (BFL: 6 flux-kontext-max jobs per account).
    """

    per_key: int
    account: int | None = None
    model: int | None = None


@dataclass(frozen=True)
class KeyChoice:
    """`index` of the chosen key; else None, with `busy` (all at cap) or `retry_after_s`."""

    index: int | None
    busy: bool = False
    retry_after_s: float = 0.0


@dataclass(frozen=True)
class KeyStatus:
    disabled: bool
    cooldown_until: float
    recheck_claimed: bool = False


@dataclass(frozen=True)
class IdemRecord:
    state: str
    body_hash: str
    response: bytes


class State(ABC):
    lease_s: float = 30.0

    @abstractmethod
    async def admit(
        self, names: Counters, request_id: str, limits: Limits, images: int, cost_micros: int
    ) -> Admission:
        """Check every limit and, only if all pass, reserve one request, a lease and the quota."""

    @abstractmethod
    async def settle(
        self, names: Counters, request_id: str, images_used: int, micros_used: int
    ) -> None:
        """Free the request's lease and charge exactly what it used.

        What its stored reservation still holds is given back and what was used is counted, so
        a reservation lost to a Redis restart (or given back when its lease expired) gives back
        nothing, and counters never go below 0. A settlement that finds no reservation keeps a
        late admission of the same request out (its answer was lost; it must not take a lease).
        """

    @abstractmethod
    async def renew(self, team: str, request_ids: list[str]) -> None:
        """Extend the in-flight leases of requests this process is still running."""

    @abstractmethod
    async def counters_read(self, names: Counters) -> CounterValues:
        """The live values `admit` checks, without admitting anything (for the console)."""

    @abstractmethod
    async def key_acquire(
        self, pool: str, keys: list[str], model: str, lease_id: str, caps: SlotCaps
    ) -> KeyChoice:
        """A slot on the least busy usable key among `keys` (fingerprints), in their order,
        unless the pool's account is at one of its caps (then busy)."""

    @abstractmethod
    async def key_release(self, pool: str, key: str, model: str, lease_id: str) -> None:
        """Free the slot on the key and in the account's counts."""

    @abstractmethod
    async def key_renew(self, pool: str, key: str, model: str, lease_ids: list[str]) -> None: ...

    @abstractmethod
    async def pool_inflight(self, pool: str, model: str | None = None) -> int:
        """Live slots across every key of the pool's account (of one model, if given)."""

    @abstractmethod
    async def key_event(
        self, pool: str, key: str, event: str, seconds: float = -1, detail: str = ""
    ) -> KeyStatus:
        """Record ok | rate_limited | failed | disable | enable | claim_recheck for a key."""

    @abstractmethod
    async def key_info(self, pool: str, key: str) -> dict[str, str]:
        """The raw shared state of a key (for admin output)."""

    @abstractmethod
    async def key_inflight(self, pool: str, key: str) -> int: ...

    @abstractmethod
    async def idem_begin(self, name: str, body_hash: str) -> IdemRecord | None:
        """Claim `name` (None: claimed now) or return the record someone else holds."""

    @abstractmethod
    async def idem_finish(self, name: str, response: bytes) -> None: ...

    @abstractmethod
    async def idem_drop(self, name: str) -> None: ...

    @abstractmethod
    async def usage_add(self, team: str, day: str, counts: dict[str, int]) -> None:
        """Add to a team's usage counters for one UTC day (kept for USAGE_TTL_S)."""

    @abstractmethod
    async def usage_get(self, team: str, days: list[str]) -> dict[str, dict[str, int]]:
        """Usage counters of a team per day, for the days asked (missing days absent)."""

    @abstractmethod
    async def index_add(self, name: str, member: str, score: float) -> None:
        """Put `member` into the ordered index `name` (a gallery: image id by created time)."""

    @abstractmethod
    async def index_page(
        self, name: str, before: float | None, limit: int
    ) -> list[tuple[str, float]]:
        """Up to `limit` (member, score) pairs scored below `before` (None: all), highest first."""

    @abstractmethod
    async def index_remove(self, name: str, members: list[str]) -> None: ...

    @abstractmethod
    async def list_push(self, name: str, item: bytes, keep: int) -> None:
        """Prepend `item` to the capped list `name`, which keeps only its newest `keep` items."""

    @abstractmethod
    async def list_read(self, name: str, limit: int) -> list[bytes]:
        """The newest `limit` items of a capped list, newest first."""

    @abstractmethod
    async def lock(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or extend a lease-lock; True if `owner` holds it now."""

    @abstractmethod
    async def unlock(self, name: str, owner: str) -> None: ...

    @abstractmethod
    async def ping(self) -> bool: ...

    async def aclose(self) -> None:
        return None


STREAK_LIMIT = 3
STREAK_COOLDOWN_S = 30.0
