"""Everything the simulator remembers, in one object held by the app."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from gateway.sim.config import Faults, SimConfig
from gateway.sim.render import CONTENT_TYPES, RenderSpec, noise_png, render

MAX_REQUESTS = 2000
MAX_RESULTS = 512
MAX_SHARED_RESULTS = 100_000
MAX_RENDERS = 64
MAX_JOBS = 4096


def fingerprint(key: str) -> str:
    """A short, stable name for a key that never reveals it."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class StoredImage:
    data: bytes
    output_format: str
    sha256: str = ""

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.output_format]


@dataclass(slots=True)
class Job:
    """A BFL task: Pending until `ready_at`, then `outcome` (Ready or a final status)."""

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
    settled: bool = False

    def active(self, now: float) -> bool:
        return now < self.ready_at


@dataclass
class SimState:
    config: SimConfig
    faults: Faults = field(default_factory=Faults)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=MAX_REQUESTS))
    jobs: OrderedDict[str, Job] = field(default_factory=OrderedDict)
    unsettled: dict[str, Job] = field(default_factory=dict)
    results: OrderedDict[str, StoredImage] = field(default_factory=OrderedDict)
    issued: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    renders: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    balances: dict[str, float] = field(default_factory=dict)
    submits: int = 0
    result_downloads: int = 0
    fixed: StoredImage | None = None

    def reset(self) -> None:
        """Forget everything but the configuration."""
        fresh = SimState(self.config)
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def key_ok(self, key: str | None) -> bool:
        if not key:
            return False
        return not self.config.keys or any(
            secrets.compare_digest(key, known) for known in self.config.keys
        )

    @property
    def latency(self) -> float:
        return self.config.latency if self.faults.latency is None else self.faults.latency

    @property
    def ready_after(self) -> float:
        for value in (self.faults.bfl_ready_after, self.faults.latency):
            if value is not None:
                return value
        if self.config.poll_ready_after is not None:
            return self.config.poll_ready_after
        return self.config.latency

    @property
    def url_ttl(self) -> float:
        ttl = self.faults.result_url_ttl
        return self.config.url_ttl if ttl is None else ttl

    def moderated(self, prompt: str) -> bool:
        word = self.config.moderation_word.lower()
        return bool(word) and word in prompt.lower()

    def record(self, entry: dict[str, Any]) -> None:
        self.requests.append(entry)

    def balance(self, key: str) -> float:
        if key in self.faults.no_credit_keys:
            return 0.0
        return self.balances.get(key, self.config.credits)

    def set_balance(self, key: str, credits: float) -> None:
        self.balances[key] = credits

    def add_job(self, job: Job) -> None:
        self.balances[job.key] = self.balances.get(job.key, self.config.credits) - job.cost
        self.jobs[job.id] = job
        self.unsettled[job.id] = job
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)

    def settle(self, now: float | None = None) -> None:
        """Close jobs whose time has come; refund those that did not end Ready."""
        now = time.time() if now is None else now
        for job in [job for job in self.unsettled.values() if not job.active(now)]:
            del self.unsettled[job.id]
            job.settled = True
            if job.outcome != "Ready":
                self.balances[job.key] = self.balances.get(job.key, 0.0) + job.cost

    def active(self, key: str, now: float, model: str | None = None) -> int:
        return sum(
            1
            for job in self.unsettled.values()
            if job.key == key and job.active(now) and model in (None, job.model)
        )

    def active_by_fingerprint(self, now: float) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self.unsettled.values():
            if job.active(now):
                name = fingerprint(job.key)
                counts[name] = counts.get(name, 0) + 1
        return counts

    async def render(self, spec: RenderSpec) -> StoredImage:
        """Render through a small cache: identical inputs give identical bytes anyway."""
        if self.config.result_kib is not None:
            if self.fixed is None:
                data = await noise_png(self.config.result_kib)
                self.fixed = StoredImage(data, "png", hashlib.sha256(data).hexdigest())
            return self.fixed
        digest = spec.digest()
        data = self.renders.get(digest)
        if data is None:
            data = await render(spec)
            self.renders[digest] = data
            while len(self.renders) > MAX_RENDERS:
                self.renders.popitem(last=False)
        else:
            self.renders.move_to_end(digest)
        return StoredImage(data, spec.output_format)

    @property
    def max_results(self) -> int:
        """In fast mode every result shares one image, so many more links can stay live."""
        return MAX_SHARED_RESULTS if self.config.result_kib is not None else MAX_RESULTS

    def store_result(self, result_id: str, image: StoredImage) -> None:
        self.results[result_id] = image
        while len(self.results) > self.max_results:
            self.results.popitem(last=False)

    def note_link(self, result_id: str, url: str, expires: float) -> None:
        """Log a link handed out (the latest per result), so tests can find the bytes."""
        image = self.results[result_id]
        self.issued.pop(result_id, None)
        self.issued[result_id] = {
            "id": result_id,
            "url": url,
            "expires": expires,
            "content_type": image.content_type,
            "size": len(image.data),
            "sha256": image.sha256 or hashlib.sha256(image.data).hexdigest(),
        }
        while len(self.issued) > self.max_results:
            self.issued.popitem(last=False)

    def take_fail_status(self) -> int | None:
        return self._take("fail_status", "fail_count")

    def take_result_status(self) -> int | None:
        return self._take("result_status", "result_status_count")

    def _take(self, status_field: str, count_field: str) -> int | None:
        status: int | None = getattr(self.faults, status_field)
        count: int = getattr(self.faults, count_field)
        if status is None or count == 0:
            return None
        if count > 0:
            setattr(self.faults, count_field, count - 1)
        return status
