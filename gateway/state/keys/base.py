"""Key slots: leases on named keys of a named account, with caps, and each key's health.

`pool` names an account (all its keys), `key` one key (a fingerprint, never the secret) and
`model` a model; the layer does not know what they are. The policy (how many failures cool a
key, for how long) belongs to the caller and is passed in (`Streak`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.state.holds import BackendName

KeyEvent = Literal["ok", "rate_limited", "failed", "disable", "enable"]


@dataclass(frozen=True)
class SlotCaps:
    """Jobs one key may run, and the account-wide caps across all keys of a pool (None: none).

    `model` caps one model across the account (BFL: 6 flux-kontext-max jobs per account).
    """

    per_key: int
    account: int | None = None
    model: int | None = None


@dataclass(frozen=True)
class Slot:
    """A job's slot on `key` of `pool` for `model`, held by `backend`: release it there."""

    pool: str
    key: str
    model: str
    lease_id: str
    backend: BackendName


@dataclass(frozen=True)
class KeyChoice:
    """`index` of the chosen key and its `slot`; else None, with `busy` (all at cap) or
    `retry_after_s`."""

    index: int | None
    busy: bool = False
    retry_after_s: float = 0.0
    slot: Slot | None = None


@dataclass(frozen=True)
class KeyStatus:
    """A key's shared health; times are epoch seconds (0: none)."""

    disabled: bool
    cooldown_until: float
    recheck_at: float
    last_error: str | None


@dataclass(frozen=True)
class Streak:
    """`failures` failures in a row cool a key for `cooldown_s`."""

    failures: int
    cooldown_s: float


class KeySlots(Protocol):
    lease_s: float
    """How long a slot lives unless renewed: a dead process's slots expire after it."""

    async def key_acquire(
        self, pool: str, keys: list[str], model: str, lease_id: str, caps: SlotCaps
    ) -> KeyChoice:
        """A slot on the least busy usable key among `keys`, in their order, unless the
        account is at one of its caps (then busy)."""
        ...

    async def key_release(self, slot: Slot) -> None:
        """Free the slot on the key and in the account's counts."""
        ...

    async def key_renew(self, slots: list[Slot]) -> None:
        """Extend the slots of jobs this process is still running."""
        ...

    async def pool_inflight(self, pool: str, model: str | None = None) -> int:
        """Live slots across every key of the account (of one model, if given)."""
        ...

    async def key_inflight(self, pool: str, key: str) -> int:
        """Live slots on one key."""
        ...

    async def key_event(
        self,
        pool: str,
        key: str,
        event: KeyEvent,
        streak: Streak,
        seconds: float = -1,
        detail: str = "",
    ) -> KeyStatus:
        """Record what happened to a key: `rate_limited` cools it for `seconds` (< 0: a
        doubling backoff), `disable` takes it out until a re-check in `seconds`, `failed`
        counts towards `streak`, `ok` resets the streaks and `enable` brings it back."""
        ...

    async def key_claim_recheck(self, pool: str, key: str, seconds: float) -> bool:
        """True for the one caller that may re-check a disabled key now (the next claim is
        possible in `seconds`)."""
        ...

    async def key_status(self, pool: str, key: str) -> KeyStatus:
        """The key's shared health, as every replica sees it."""
        ...
