"""State backends chosen by name; an unknown name is a start-up error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.errors import ConfigError, StateUnavailable
from gateway.metrics import Metrics
from gateway.settings import StateSettings
from gateway.state.base import State
from gateway.state.budget import request_budget
from gateway.state.connection import RedisConnection
from gateway.state.guard import Failures, guard_state
from gateway.state.memory import memory_state
from gateway.state.redis import redis_state

__all__ = ["State", "StateUnavailable", "open_state", "request_budget"]


def _memory(settings: StateSettings, metrics: Metrics, jobs_folder: Path | None) -> State:
    return memory_state(settings.lease_s, jobs_folder)


def _redis(settings: StateSettings, metrics: Metrics, jobs_folder: Path | None) -> State:
    conn = RedisConnection(settings.redis_url, settings.timeout_s, settings.key_prefix)
    failures = Failures(settings.on_redis_error == "fail-open", metrics)
    return guard_state(
        redis_state(conn, settings.lease_s), memory_state(settings.lease_s), failures
    )


BACKENDS: dict[str, Callable[[StateSettings, Metrics, Path | None], State]] = {
    "memory": _memory,
    "redis": _redis,
}


def open_state(settings: StateSettings, metrics: Metrics, jobs_folder: Path | None = None) -> State:
    """The state `state.backend` names, built once at start-up; memory state keeps job
    records in `jobs_folder` when given, so a restarted process resumes its jobs."""
    build = BACKENDS.get(settings.backend)
    if build is None:
        raise ConfigError(f"state.backend {settings.backend!r} is unknown")
    return build(settings, metrics, jobs_folder)
