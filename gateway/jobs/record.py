"""The job record: what a client reads back, and what another replica needs to resume it."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

from gateway.errors import GatewayError

Status = Literal["queued", "running", "succeeded", "failed"]
ENDED: frozenset[str] = frozenset({"succeeded", "failed"})
ID_PREFIX = "imgjob_"


def new_job_id() -> str:
    """`imgjob_` and 160 random bits: unguessable, so an id alone reveals nothing."""
    return ID_PREFIX + secrets.token_hex(20)


@dataclass
class Resume:
    """What a replica needs to finish a BFL job another one submitted, and to settle it.

    Stored once the upstream accepted the job; with it the job costs one submission in all.
    """

    upstream: str
    key_fingerprint: str
    polling_url: str
    cost_micros: int | None
    started: float


@dataclass
class Settlement:
    """The admission a job holds, so whichever replica ends it settles the same reservation."""

    team_counters: tuple[str, str, str]
    reservation_backend: str
    images: int
    reserved_micros: int
    bound_micros: int
    input_mp: int
    response_format: str
    n: int
    seed: int | None
    prompt: str
    ignored: list[str] = field(default_factory=list)


@dataclass
class JobRecord:
    id: str
    team: str
    model: str
    request_id: str
    created: int
    status: Status = "queued"
    webhook_url: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    http_status: int | None = None
    ended_at: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    settlement: Settlement | None = None
    resume: Resume | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def public(self) -> dict[str, Any]:
        """The job object of SPEC 4.6, as clients and webhooks see it."""
        job: dict[str, Any] = {
            "id": self.id,
            "object": "image.job",
            "status": self.status,
            "created": self.created,
            "model": self.model,
            "request_id": self.request_id,
        }
        if self.status == "succeeded":
            job["result"] = self.result
        elif self.status == "failed":
            job["error"] = {**(self.error or {}), "status": self.http_status}
        return job

    def fail(self, error: GatewayError, ended_at: float) -> None:
        self.status = "failed"
        self.error = error.body()["error"]
        self.http_status = error.status
        self.ended_at = ended_at

    def succeed(self, body: dict[str, Any], ended_at: float) -> None:
        self.status = "succeeded"
        self.result = body
        self.ended_at = ended_at

    def dumps(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def loads(cls, raw: bytes) -> JobRecord:
        data = orjson.loads(raw)
        settlement = data.pop("settlement")
        resume = data.pop("resume")
        record = cls(**data)
        if settlement is not None:
            settlement["team_counters"] = tuple(settlement["team_counters"])
            record.settlement = Settlement(**settlement)
        if resume is not None:
            record.resume = Resume(**resume)
        return record
