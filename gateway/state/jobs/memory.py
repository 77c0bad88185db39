"""Job records and leases in this process, optionally kept as one JSON file per job.

With a folder, a restarted single process finds its jobs again and resumes those it can: the
files are written atomically (temporary file, then rename) off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.state.jobs.base import ACTIVE_TTL_S


@dataclass
class _Job:
    listing: str
    score: float
    record: bytes
    expires: float
    owner: str | None = None
    lease_until: float | None = None

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "listing": self.listing,
                "score": self.score,
                "record": self.record.decode(),
                "expires": self.expires,
                "owner": self.owner,
                "lease_until": self.lease_until,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> _Job:
        data = orjson.loads(raw)
        data["record"] = data["record"].encode()
        return cls(**data)


class MemoryJobs:
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._jobs: dict[str, _Job] = {}
        self._loaded = folder is None
        self._load_lock = asyncio.Lock()

    async def _ready(self) -> None:
        if self._loaded:
            return
        async with self._load_lock:
            if not self._loaded:
                assert self.folder is not None
                self._jobs = await asyncio.to_thread(_load, self.folder, time.time())
                self._loaded = True

    def _live(self, job_id: str) -> _Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.expires <= time.time():
            del self._jobs[job_id]
            return None
        return job

    async def _save(self, job_id: str) -> None:
        if self.folder is None:
            return
        job = self._jobs.get(job_id)
        if job is not None:
            await asyncio.to_thread(_write, self.folder, job_id, job.dumps())

    async def job_create(
        self, job_id: str, listing: str, score: float, record: bytes, owner: str, lease_s: float
    ) -> None:
        await self._ready()
        now = time.time()
        self._jobs[job_id] = _Job(listing, score, record, now + ACTIVE_TTL_S, owner, now + lease_s)
        await self._save(job_id)

    async def job_get(self, job_id: str) -> bytes | None:
        await self._ready()
        job = self._live(job_id)
        return None if job is None else job.record

    async def job_page(
        self, listing: str, before: float | None, limit: int
    ) -> list[tuple[bytes, float]]:
        await self._ready()
        found = [
            (job.record, job.score)
            for job_id in list(self._jobs)
            if (job := self._live(job_id)) is not None
            and job.listing == listing
            and (before is None or job.score < before)
        ]
        found.sort(key=lambda pair: pair[1], reverse=True)
        return found[:limit]

    async def job_score(self, listing: str, job_id: str) -> float | None:
        await self._ready()
        job = self._live(job_id)
        return job.score if job is not None and job.listing == listing else None

    async def job_update(self, job_id: str, record: bytes, owner: str) -> bool:
        await self._ready()
        job = self._live(job_id)
        if job is None or job.owner != owner:
            return False
        job.record = record
        await self._save(job_id)
        return True

    async def job_end(self, job_id: str, record: bytes, owner: str, ttl_s: float) -> bool:
        await self._ready()
        job = self._live(job_id)
        if job is None or job.owner != owner:
            return False
        job.record, job.expires, job.owner, job.lease_until = (
            record,
            time.time() + ttl_s,
            None,
            None,
        )
        await self._save(job_id)
        return True

    async def job_claim(self, job_id: str, owner: str, lease_s: float) -> bool:
        await self._ready()
        job = self._live(job_id)
        if job is None or job.lease_until is None:
            return False
        now = time.time()
        if job.owner != owner and job.lease_until > now:
            return False
        job.owner, job.lease_until = owner, now + lease_s
        await self._save(job_id)
        return True

    async def job_renew(self, job_ids: list[str], owner: str, lease_s: float) -> list[str]:
        await self._ready()
        lost = []
        for job_id in job_ids:
            job = self._live(job_id)
            if job is None or job.owner != owner or job.lease_until is None:
                lost.append(job_id)
            else:
                job.lease_until = time.time() + lease_s
        return lost

    async def job_expired(self, limit: int) -> list[str]:
        await self._ready()
        now = time.time()
        held = [
            (job.lease_until, job_id)
            for job_id, job in self._jobs.items()
            if job.lease_until is not None and job.lease_until <= now
        ]
        return [job_id for _, job_id in sorted(held)[:limit]]


def _write(folder: Path, job_id: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{job_id}.tmp"
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, folder / f"{job_id}.json")


def _load(folder: Path, now: float) -> dict[str, _Job]:
    """The jobs kept in `folder`; expired and unreadable files are removed."""
    jobs: dict[str, _Job] = {}
    if not folder.is_dir():
        return jobs
    for path in folder.glob("*.json"):
        try:
            job = _Job.loads(path.read_bytes())
        except (OSError, ValueError, TypeError, KeyError):
            job = None
        if job is None or job.expires <= now:
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        jobs[path.stem] = job
    return jobs
