"""Job records and leases in Redis: any replica reads any job; claims are one script each."""

from __future__ import annotations

from typing import cast

from gateway.state.connection import RedisConnection
from gateway.state.jobs.base import ACTIVE_TTL_S

SLOT = "jobs"
"""Every job key shares one owner (one Cluster slot): a claim or an end touches the record,
the listing and the leases in one script."""
PAGE_ROUNDS = 8
"""Listing members whose record expired are dropped; a page is refilled at most this often."""


class RedisJobs:
    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn
        self._create = conn.script("job_create")
        self._update = conn.script("job_update")
        self._end = conn.script("job_end")
        self._claim = conn.script("job_claim")
        self._renew = conn.script("job_renew")
        self._leases = conn.key("jobleases", SLOT)
        self._owners = conn.key("jobowners", SLOT)

    def _record(self, job_id: str) -> str:
        return self.conn.key("job", SLOT, job_id)

    def _listing(self, listing: str) -> str:
        return self.conn.key("joblist", SLOT, listing)

    async def job_create(
        self, job_id: str, listing: str, score: float, record: bytes, owner: str, lease_s: float
    ) -> None:
        keys = [self._record(job_id), self._listing(listing), self._leases, self._owners]
        args: list[str | int | bytes] = [
            job_id,
            record,
            int(ACTIVE_TTL_S * 1000),
            repr(score),
            owner,
            int(lease_s * 1000),
        ]
        await self.conn.run(self._create, keys, args)

    async def job_get(self, job_id: str) -> bytes | None:
        key = self._record(job_id)
        return cast(bytes | None, await self.conn.call(lambda: self.conn.redis.get(key)))

    async def job_page(
        self, listing: str, before: float | None, limit: int
    ) -> list[tuple[bytes, float]]:
        key = self._listing(listing)
        page: list[tuple[bytes, float]] = []
        for _ in range(PAGE_ROUNDS):
            want = limit - len(page)
            found, gone = await self._page_once(key, before, want)
            page += found
            if not gone or len(found) + len(gone) < want:
                break
            before = min([score for _, score in found] + [gone[-1][1]])
        return page

    async def _page_once(
        self, key: str, before: float | None, want: int
    ) -> tuple[list[tuple[bytes, float]], list[tuple[str, float]]]:
        """One page of the listing: the records found, and members whose record expired
        (removed from the listing here)."""
        high = "+inf" if before is None else f"({before!r}"
        members = cast(
            list[tuple[bytes, float]],
            await self.conn.call(
                lambda: self.conn.redis.zrevrangebyscore(
                    key, high, "-inf", start=0, num=want, withscores=True
                )
            ),
        )
        if not members:
            return [], []
        names = [self._record(member.decode()) for member, _ in members]
        records = cast(
            list[bytes | None], await self.conn.call(lambda: self.conn.redis.mget(names))
        )
        found = [
            (record, float(score))
            for (_, score), record in zip(members, records, strict=True)
            if record is not None
        ]
        gone = [
            (member.decode(), float(score))
            for (member, score), record in zip(members, records, strict=True)
            if record is None
        ]
        if gone:
            await self.conn.call(lambda: self.conn.redis.zrem(key, *[g for g, _ in gone]))
        return found, gone

    async def job_score(self, listing: str, job_id: str) -> float | None:
        key = self._listing(listing)
        score = await self.conn.call(lambda: self.conn.redis.zscore(key, job_id))
        return None if score is None else float(score)

    async def job_update(self, job_id: str, record: bytes, owner: str) -> bool:
        keys = [self._record(job_id), self._owners]
        return int(await self.conn.run(self._update, keys, [job_id, owner, record])) == 1

    async def job_end(self, job_id: str, record: bytes, owner: str, ttl_s: float) -> bool:
        keys = [self._record(job_id), self._leases, self._owners]
        args: list[str | int | bytes] = [job_id, owner, record, int(ttl_s * 1000)]
        return int(await self.conn.run(self._end, keys, args)) == 1

    async def job_claim(self, job_id: str, owner: str, lease_s: float) -> bool:
        keys = [self._leases, self._owners]
        args: list[str | int] = [job_id, owner, int(lease_s * 1000)]
        return int(await self.conn.run(self._claim, keys, args)) == 1

    async def job_renew(self, job_ids: list[str], owner: str, lease_s: float) -> list[str]:
        if not job_ids:
            return []
        keys = [self._leases, self._owners]
        args: list[str | int] = [owner, int(lease_s * 1000), *job_ids]
        lost = await self.conn.run(self._renew, keys, args)
        return [one.decode() for one in lost]

    async def job_expired(self, limit: int) -> list[str]:
        now = await self.conn.now_ms()
        found = await self.conn.call(
            lambda: self.conn.redis.zrangebyscore(self._leases, "-inf", now, start=0, num=limit)
        )
        return [member.decode() for member in cast(list[bytes], found)]
