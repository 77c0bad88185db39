"""Simulator settings, and the fault switches tests flip while it runs."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FinalStatus = Literal["Error", "Failed", "Content Moderated", "Request Moderated", "Task not found"]


class SimConfig(BaseModel):
    """How the simulated upstreams behave when no fault is set.

    `keys` empty accepts any key. `poll_ready_after`, when set, is how long a BFL job stays
    Pending instead of `latency`. `result_kib` is the benchmarks' fast mode: every result is one
    incompressible PNG of about that size, rendered once.

    `poll_host` is the host BFL `polling_url`s name (with the submit's scheme and port), because
    BFL answers with regional hosts other than the submit host; None or "" keeps the submit host.
    `accounts` maps an account name to its keys: BFL counts `max_active` tasks (6 for
    flux-kontext-max) and keeps credits per account; a key listed nowhere is an account alone.
    """

    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(default_factory=list)
    url_ttl: float = Field(default=600.0, gt=0)
    latency: float = Field(default=0.0, ge=0)
    poll_ready_after: float | None = Field(default=None, ge=0)
    moderation_word: str = "forbidden"
    credits: float = 1000.0
    max_active: int = Field(default=24, ge=1)
    accounts: dict[str, list[str]] = Field(default_factory=dict)
    poll_host: str | None = "localhost"
    signing_secret: str = Field(default_factory=lambda: secrets.token_hex(32))
    result_kib: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _accounts_hold_known_keys_once(self) -> SimConfig:
        seen: set[str] = set()
        for name, keys in self.accounts.items():
            if not name or not keys:
                raise ValueError("every account needs a name and at least one key")
            if seen.intersection(keys) or len(set(keys)) < len(keys):
                raise ValueError(f"account {name!r}: a key belongs to one account only")
            if self.keys and not set(keys) <= set(self.keys):
                raise ValueError(f"account {name!r} lists a key that `keys` does not accept")
            seen.update(keys)
        return self


class Faults(BaseModel):
    """Faults injected on demand through `PUT /_sim/faults`; every field is optional.

    Counts (`fail_count`, `result_status_count`) are decremented as they fire; -1 means always.
    `bfl_cost` (credits) replaces the list-price `cost` a BFL submit reports and charges.
    """

    model_config = ConfigDict(extra="forbid")

    latency: float | None = Field(default=None, ge=0)
    rate_limit_keys: dict[str, float] = Field(default_factory=dict)
    no_credit_keys: list[str] = Field(default_factory=list)
    fail_status: int | None = Field(default=None, ge=400, le=599)
    fail_count: int = Field(default=-1, ge=-1)
    bfl_final_status: FinalStatus | None = None
    bfl_ready_after: float | None = Field(default=None, ge=0)
    bfl_cost: float | None = Field(default=None, ge=0)
    result_delay: float = Field(default=0.0, ge=0)
    result_chunk_delay: float = Field(default=0.0, ge=0)
    result_truncate: bool = False
    result_oversize_mb: float | None = Field(default=None, gt=0)
    result_not_image: bool = False
    result_status: int | None = Field(default=None, ge=400, le=599)
    result_status_count: int = Field(default=-1, ge=-1)
    result_url_ttl: float | None = Field(default=None, ge=0)
    result_host: str | None = None
    hang: bool = False
    answer_cut_off: bool = False
