"""One Redis connection pool, shared by every Redis ability of a gateway.

Connection failures become `StateUnavailable` here, at the boundary. Every key starts with
`state.key_prefix`, so several gateways can share one Redis. Scripts are the `lua/*.lua` files.
The Redis may be one server, a Sentinel-watched master (followed through failovers) or a
Cluster (`topology.py`); on a Cluster, `key` makes every key of one owner share a slot.

Nothing is sent twice: a script whose answer was lost (a stalled Redis) may still run once
Redis resumes, so re-sending it could take two leases for one request. Instead the abilities
send a cleanup once, in the background (`detach`), and whatever a script took carries an
expiry. Each call is bounded by the request's budget (`budget.py`), so a request waits
`timeout_s` in all, not per call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, KeyT

from gateway.errors import StateUnavailable
from gateway.state.budget import BudgetSpent, bounded, detached
from gateway.state.sentinel import SafeSentinel
from gateway.state.topology import Topology, checked_topology

DEFAULT_PREFIX = "fg:"
T = TypeVar("T")

MAX_CONNECTIONS = 64
"""A burst of requests queues for one of MAX_CONNECTIONS calls at once (each takes well under
a millisecond) rather than failing, as redis-py's Sentinel and Cluster pools do past their
size. The wait counts against the call's timeout like the call itself."""


def limit(value: int | None) -> int:
    """A limit as the scripts take it: < 0 means none."""
    return -1 if value is None else value


class SourceScript(AsyncScript):
    """A script sent with its source (EVAL) on every call. On a Cluster a node that was just
    promoted or added has no script cache yet, and redis-py's reload after NOSCRIPT is not
    safe for concurrent calls there; the few hundred bytes per call are the price."""

    async def __call__(
        self,
        keys: Sequence[KeyT] | None = None,
        args: Iterable[EncodableT] | None = None,
        client: Any = None,
    ) -> Any:
        keys = list(keys or [])
        source = cast(str, self.script)
        return await self.registered_client.eval(source, len(keys), *keys, *(args or []))


def _options(timeout_s: float) -> dict[str, Any]:
    """Every connection, to any node: bounded, never re-sent, nothing before the command."""
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), 0),
        # Nothing before the command on a new connection (RESP2: no HELLO; no CLIENT SETINFO;
        # no health-check PING): to a paused Redis the command is then at least sent, so a
        # settlement issued during a stall lands when Redis resumes. A closed connection is
        # still replaced when it is taken from the pool.
        "protocol": 2,
        "driver_info": None,
    }


class RedisConnection:
    def __init__(self, url: str, timeout_s: float = 2.0, prefix: str = DEFAULT_PREFIX) -> None:
        self.timeout_s = timeout_s
        self.prefix = prefix
        self.topology = checked_topology(url, prefix)
        self.cluster = self.topology.kind == "cluster"
        self._sentinel: Sentinel | None = None
        self._cluster: RedisCluster | None = None
        self.redis = self._client(self.topology)
        self._calls = asyncio.Semaphore(MAX_CONNECTIONS)
        self._cleanups: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def _client(self, topology: Topology) -> aioredis.Redis:
        options = _options(self.timeout_s)
        auth: dict[str, Any] = {"username": topology.username, "password": topology.password}
        if topology.kind == "sentinel":
            sentinel_options = _options(self.timeout_s) | {
                "password": topology.sentinel_password,
                "ssl": topology.tls,
            }
            self._sentinel = SafeSentinel(  # type: ignore[no-untyped-call]
                list(topology.hosts), sentinel_kwargs=sentinel_options, **options
            )
            tls: dict[str, Any] = {"ssl": True} if topology.tls else {}
            master: aioredis.Redis = self._sentinel.master_for(
                topology.master, max_connections=MAX_CONNECTIONS, db=topology.db, **auth, **tls
            )
            return master
        if topology.kind == "cluster":
            nodes = [ClusterNode(host, port) for host, port in topology.hosts]
            self._cluster = RedisCluster(
                startup_nodes=nodes,
                max_connections=MAX_CONNECTIONS,
                ssl=topology.tls,
                **auth,
                **options,
            )
            # The same commands, scripts and pipelines as one Redis, routed by key slot;
            # MOVED and ASK are followed (a redirect, not a re-send of an unknown outcome).
            return cast(aioredis.Redis, self._cluster)
        pool = aioredis.BlockingConnectionPool.from_url(
            topology.url, max_connections=MAX_CONNECTIONS, timeout=None, **options
        )
        return aioredis.Redis.from_pool(pool)

    def name(self, *parts: str) -> str:
        """A key of this gateway: the prefix, then the parts joined by ':'."""
        return self.prefix + ":".join(parts)

    def key(self, kind: str, owner: str, *rest: str) -> str:
        """A key of `owner` (a team, a key pool, a record or lock name): `name(kind, owner,
        *rest)`, with the owner as hash tag on a Cluster, so every key of one owner lives in one
        slot. One script or transaction may touch several keys only if they share an owner."""
        return self.name(kind, f"{{{owner}}}" if self.cluster else owner, *rest)

    def script(self, name: str) -> AsyncScript:
        source = resources.files("gateway.state").joinpath(f"lua/{name}.lua").read_text()
        if self.cluster:
            return SourceScript(self.redis, source)
        return self.redis.register_script(source)

    async def call(
        self, operation: Callable[[], Awaitable[T]], timeout_s: float | None = None
    ) -> T:
        """One round trip, sent once, within the call's timeout and the request's budget."""
        if self._closed:
            # A request still finishing after shutdown must not open a connection that
            # nothing would ever close again.
            raise StateUnavailable("redis: the state connection is closed")
        self._running += 1
        self._idle.clear()
        try:
            async with bounded(timeout_s or self.timeout_s), self._calls:
                if self._cluster is not None:
                    # Learn the slot map once, before any command: commands racing a first
                    # (or, after a failed node, a renewed) discovery lose their connections.
                    await self._cluster.initialize()
                return await operation()
        except BudgetSpent:
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StateUnavailable(f"redis: {type(exc).__name__}") from exc
        except (RedisError, RedisClusterException) as exc:
            # A cluster's own refusals (no node for a slot, keys over slots) are not
            # RedisErrors; they reach the client as the same 503.
            raise StateUnavailable(f"redis: {exc}") from exc
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def run(
        self, script: AsyncScript, keys: list[str], args: list[Any], timeout_s: float | None = None
    ) -> Any:
        """One script call, as `call` sends it."""
        return await self.call(lambda: script(keys=keys, args=args), timeout_s)

    def detach(self, call: Callable[[], Awaitable[Any]]) -> None:
        """Send a cleanup in the background, outside any request's budget."""
        detached(call, self._cleanups)

    async def now_ms(self) -> int:
        seconds, micros = await self.call(self.redis.time)
        return int(seconds) * 1000 + int(micros) // 1000

    async def ping(self) -> bool:
        try:
            return bool(await self.call(self.redis.ping))
        except StateUnavailable:
            return False

    async def cleanups_sent(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the cleanups after lost answers to finish."""
        if self._cleanups:
            await asyncio.wait(list(self._cleanups), timeout=timeout_s)

    async def aclose(self) -> None:
        await self.cleanups_sent(self.timeout_s)
        self._closed = True
        for task in list(self._cleanups):
            task.cancel()
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        # Calls already under way (requests cancelled at shutdown settling what they took) end
        # within their timeout; closing the pool under them would miss a connection still
        # being opened, which would then stay open in a pool nothing closes again.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout_s):
                await self._idle.wait()
        await self.redis.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()
