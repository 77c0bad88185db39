"""Simulator settings, and the fault switches tests flip while it runs."""

from __future__ import annotations

import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FinalStatus = Literal["Error", "Failed", "Content Moderated", "Request Moderated", "Task not found"]


class SimConfig(BaseModel):
    """How the simulated upstreams behave when no fault is set.

    `keys` empty accepts any key. `poll_ready_after`, when set, is how long a BFL job stays
    Pending instead of `latency`. `result_kib` is the benchmarks' fast mode: every result is one
    incompressible PNG of about that size, rendered once.
    """

    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(default_factory=list)
    url_ttl: float = Field(default=600.0, gt=0)
    latency: float = Field(default=0.0, ge=0)
    poll_ready_after: float | None = Field(default=None, ge=0)
    moderation_word: str = "forbidden"
    credits: float = 1000.0
    max_active_per_key: int = Field(default=24, ge=1)
    signing_secret: str = Field(default_factory=lambda: secrets.token_hex(32))
    result_kib: int | None = Field(default=None, ge=1)


class Faults(BaseModel):
    """Faults injected on demand through `PUT /_sim/faults`; every field is optional.

    Counts (`fail_count`, `result_status_count`) are decremented as they fire; -1 means always.
    """

    model_config = ConfigDict(extra="forbid")

    latency: float | None = Field(default=None, ge=0)
    rate_limit_keys: dict[str, float] = Field(default_factory=dict)
    no_credit_keys: list[str] = Field(default_factory=list)
    fail_status: int | None = Field(default=None, ge=400, le=599)
    fail_count: int = Field(default=-1, ge=-1)
    bfl_final_status: FinalStatus | None = None
    bfl_ready_after: float | None = Field(default=None, ge=0)
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
