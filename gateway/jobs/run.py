"""What a job runs: the synchronous request's state right after it was admitted."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.catalog import ModelSpec
from gateway.limits import Ticket
from gateway.pipeline import JobPlan
from gateway.requests import ParsedRequest
from gateway.routing import Candidate


@dataclass(frozen=True)
class JobRun:
    """Everything `ImagePipeline` needs after admission; validation and limits already passed,
    so a job can only fail the way a synchronous request fails once it is running."""

    parsed: ParsedRequest
    spec: ModelSpec
    candidates: list[Candidate]
    plan: JobPlan
    ticket: Ticket
    response_format: str
