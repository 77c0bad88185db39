"""BFL's bookkeeping per account: credits, active tasks and the cap on them.

An account is a name in `SimConfig.accounts` with its keys; a key listed nowhere is an account of
its own, named by the key's fingerprint so stats never show a key. `admit` checks credit and
capacity and records the job in one synchronous step, so concurrent submits cannot overshoot.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from gateway.keys import fingerprint
from gateway.sim.config import SimConfig

MAX_JOBS = 4096
KONTEXT_MAX = "flux-kontext-max"
KONTEXT_MAX_ACTIVE = 6
NO_QUOTA_PREFIX = "sk-quota-"
"""Keys starting with this start with no credit (see `openai_images`)."""

Refusal = Literal["no_credit", "busy"]


@dataclass(slots=True)
class Job:
    """A BFL task: Pending until `ready_at`, then `outcome` (Ready or a final status).

    `origin` is the submit's base URL: result links live there whichever host was polled.
    """

    id: str
    key: str
    model: str
    prompt: str
    seed: int
    cost: float
    output_format: str
    outcome: str
    created: float
    ready_at: float
    origin: str
    account: str
    settled: bool = False

    def active(self, now: float) -> bool:
        return now < self.ready_at


@dataclass
class Ledger:
    """Jobs close in the order they become due (a heap), and active tasks are counted per
    account as they open and close, so a submit costs the same with 5 or 5,000 in flight."""

    config: SimConfig
    jobs: OrderedDict[str, Job] = field(default_factory=OrderedDict)
    unsettled: dict[str, Job] = field(default_factory=dict)
    balances: dict[str, float] = field(default_factory=dict)
    max_active_seen: dict[str, int] = field(default_factory=dict)
    owners: dict[str, str] = field(init=False)
    _due: list[tuple[float, str]] = field(default_factory=list)
    _open: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    """Unsettled jobs by (account, None) and by (account, model)."""

    def __post_init__(self) -> None:
        self.owners = {key: name for name, keys in self.config.accounts.items() for key in keys}

    def account(self, key: str) -> str:
        return self.owners.get(key) or fingerprint(key)

    def balance(self, key: str) -> float:
        account = self.account(key)
        if account in self.balances:
            return self.balances[account]
        return 0.0 if key.startswith(NO_QUOTA_PREFIX) else self.config.credits

    def set_balance(self, key: str, credits: float) -> None:
        self.balances[self.account(key)] = credits

    def admit(self, job: Job) -> Refusal | None:
        """Charge and record `job`, or say why not.

        Nothing here awaits, so no other submit runs between the checks and the booking.
        """
        if self.balance(job.key) <= 0:
            return "no_credit"
        active = self.active(job.account, job.created)
        kontext = self.active(job.account, job.created, KONTEXT_MAX)
        if active >= self.config.max_active or (
            job.model == KONTEXT_MAX and kontext >= min(self.config.max_active, KONTEXT_MAX_ACTIVE)
        ):
            return "busy"
        self.balances[job.account] = self.balance(job.key) - job.cost
        self.jobs[job.id] = job
        self.unsettled[job.id] = job
        heapq.heappush(self._due, (job.ready_at, job.id))
        self._open[(job.account, None)] += 1
        self._open[(job.account, job.model)] += 1
        seen = self.max_active_seen.get(job.account, 0)
        self.max_active_seen[job.account] = max(seen, active + 1)
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        return None

    def settle(self, now: float | None = None) -> None:
        """Close jobs whose time has come; refund those that did not end Ready."""
        now = time.time() if now is None else now
        while self._due and self._due[0][0] <= now:
            _, job_id = heapq.heappop(self._due)
            job = self.unsettled.pop(job_id)
            job.settled = True
            self._open[(job.account, None)] -= 1
            self._open[(job.account, job.model)] -= 1
            if job.outcome != "Ready":
                self.balances[job.account] = self.balances.get(job.account, 0.0) + job.cost

    def active(self, account: str, now: float, model: str | None = None) -> int:
        self.settle(now)
        return self._open[(account, model)]

    def active_by(self, now: float, *, account: bool) -> dict[str, int]:
        """Active jobs counted by account name, or by key fingerprint."""
        self.settle(now)
        counts: dict[str, int] = {}
        for job in self.unsettled.values():
            name = job.account if account else fingerprint(job.key)
            counts[name] = counts.get(name, 0) + 1
        return counts
