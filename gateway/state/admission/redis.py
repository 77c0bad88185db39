"""Admission counters in Redis: exact across replicas, each admission one atomic script call.

Scripts read the clock from Redis itself (`TIME`), so replicas with skewed clocks still share
one window. An admission whose answer was lost is settled in the background as unused, so its
lease and reservation are freed (or, settled first, it is kept out).
"""

from __future__ import annotations

from itertools import groupby

from gateway.errors import StateUnavailable
from gateway.state.admission.base import (
    SETTLED_TTL_S,
    Admission,
    Counters,
    CounterValues,
    Limits,
    Reservation,
)
from gateway.state.budget import BudgetSpent
from gateway.state.connection import RedisConnection, limit

DAY_TTL_S = 2 * 86400
MONTH_TTL_S = 40 * 86400


class RedisAdmission:
    def __init__(self, conn: RedisConnection, lease_s: float = 30.0) -> None:
        self.conn = conn
        self.lease_s = lease_s
        self._admit = conn.script("admit")
        self._settle = conn.script("settle")
        self._renew = conn.script("renew")
        self._counters_read = conn.script("counters_read")

    def _keys(self, names: Counters) -> list[str]:
        name = self.conn.key
        return [
            name("rpm", names.team),
            name("inflight", names.team),
            name("images", names.team, names.day),
            name("spend", names.team, names.month),
            name("resv", names.team),
            name("settled", names.team),
        ]

    async def admit(
        self, names: Counters, request_id: str, limits: Limits, images: int, cost_micros: int
    ) -> Admission:
        args: list[str | int] = [
            request_id,
            limit(limits.rpm),
            limit(limits.max_concurrency),
            int(self.lease_s * 1000),
            limit(limits.images_per_day),
            images,
            DAY_TTL_S,
            limit(limits.budget_micros),
            cost_micros,
            MONTH_TTL_S,
        ]
        held = Reservation(names, request_id, "redis")
        try:
            verdict, wait_ms, remaining = await self.conn.call(
                lambda: self._admit(keys=self._keys(names), args=args)
            )
        except BudgetSpent:
            raise
        except StateUnavailable:
            # The script may still run when Redis answers again.
            self.conn.detach(lambda: self._send_settle(held, 0, 0, self.lease_s))
            raise
        refused = verdict.decode()
        if refused != "ok":
            return Admission(refused, int(wait_ms) / 1000, int(remaining))
        return Admission(None, int(wait_ms) / 1000, int(remaining), held)

    async def settle(self, held: Reservation, images_used: int, micros_used: int) -> None:
        try:
            await self._send_settle(held, images_used, micros_used, self.conn.timeout_s)
        except BudgetSpent:
            # Not sent: send it once in the background, so it lands when Redis answers again.
            self.conn.detach(
                lambda: self._send_settle(held, images_used, micros_used, self.lease_s)
            )
            raise

    async def _send_settle(
        self, held: Reservation, images: int, micros: int, timeout_s: float
    ) -> None:
        """A cleanup after a lost answer may wait up to a lease for a connection: by then
        the lease it frees has expired anyway."""
        _, inflight, images_key, spend, resv, settled = self._keys(held.names)
        args: list[str | int] = [
            held.request_id,
            images,
            micros,
            DAY_TTL_S,
            MONTH_TTL_S,
            int(SETTLED_TTL_S * 1000),
        ]
        keys = [inflight, images_key, spend, resv, settled]
        await self.conn.call(lambda: self._settle(keys=keys, args=args), timeout_s)

    async def renew(self, held: list[Reservation]) -> None:
        """One script call per team name among `held`."""
        for team, group in groupby(sorted(held, key=_team), key=_team):
            keys = [self.conn.key("inflight", team), self.conn.key("resv", team)]
            ids = [one.request_id for one in group]
            args: list[str | int] = [int(self.lease_s * 1000), MONTH_TTL_S * 1000, 1, *ids]
            await self.conn.run(self._renew, keys, args)

    async def counters_read(self, names: Counters) -> CounterValues:
        window, reset_ms, inflight, images, micros = await self.conn.call(
            lambda: self._counters_read(keys=self._keys(names)[:4])
        )
        return CounterValues(
            int(window), int(reset_ms) / 1000, int(inflight), int(images), int(micros)
        )


def _team(held: Reservation) -> str:
    return held.names.team
