"""State backends chosen by name; an unknown name is a start-up error."""

from __future__ import annotations

from gateway.errors import ConfigError, StateUnavailable
from gateway.metrics import Metrics
from gateway.settings import StateSettings
from gateway.state.base import State
from gateway.state.budget import request_budget
from gateway.state.guard import GuardedState
from gateway.state.memory import MemoryState
from gateway.state.redis import RedisState

__all__ = ["State", "StateUnavailable", "open_state", "request_budget"]


def open_state(settings: StateSettings, metrics: Metrics) -> State:
    if settings.backend == "memory":
        return MemoryState(settings.lease_s)
    if settings.backend == "redis":
        redis = RedisState(
            settings.redis_url, settings.lease_s, settings.timeout_s, settings.key_prefix
        )
        return GuardedState(redis, settings.on_redis_error == "fail-open", metrics)
    raise ConfigError(f"state.backend {settings.backend!r} is unknown")
