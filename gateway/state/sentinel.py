"""redis-py's Sentinel client, with master discovery safe to run several times at once.

A burst of requests opens many connections together, and each new connection asks the
sentinels for the master. redis-py (8.1) then moves the sentinel that answered to the front
by the index it had before its await: two discoveries at once write one sentinel client into
both places and drop the other from the list for good, with its open connections (never
closed again: a ResourceWarning when collected) and one sentinel less to ask in a failover.
"""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class SafeSentinel(Sentinel):
    async def discover_master(self, service_name: str) -> tuple[str, int]:
        """The master's address from the first sentinel that sees it healthy, as redis-py
        does; that sentinel is asked first next time, moved there by identity."""
        errors: list[str] = []
        for sentinel in list(self.sentinels):
            try:
                # Parsed into {name: state} on RESP2 (`connection._options`), as redis-py
                # reads it too.
                masters = cast(dict[str, dict[str, Any]], await sentinel.sentinel_masters())
            except (RedisConnectionError, RedisTimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                self.sentinels.remove(sentinel)
                self.sentinels.insert(0, sentinel)
                return state["ip"], state["port"]
        raise MasterNotFoundError(f"No master found for {service_name!r}: {', '.join(errors)}")
