"""In-process state: exact within one process, nothing to run. The embedded default."""

from __future__ import annotations

from pathlib import Path

from gateway.state.admission.memory import MemoryAdmission
from gateway.state.base import NoLink, State
from gateway.state.deliveries.memory import MemoryDeliveries
from gateway.state.idempotency.memory import MemoryIdempotency
from gateway.state.jobs.memory import MemoryJobs
from gateway.state.keys.memory import MemoryKeySlots
from gateway.state.locks.memory import MemoryLocks
from gateway.state.records.memory import MemoryListings, MemoryUsage


def memory_state(lease_s: float = 30.0, jobs_folder: Path | None = None) -> State:
    """`jobs_folder`: where job records are kept across a restart (None: in memory only)."""
    return State(
        "memory",
        MemoryAdmission(lease_s),
        MemoryKeySlots(lease_s),
        MemoryIdempotency(),
        MemoryUsage(),
        MemoryListings(),
        MemoryLocks(),
        MemoryJobs(jobs_folder),
        MemoryDeliveries(),
        NoLink(),
    )
