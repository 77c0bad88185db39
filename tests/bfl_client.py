"""A client of Black Forest Labs' API written from BFL's public docs (docs.bfl.ai, "Quick
start"): submit with `x-key`, poll the answer's `polling_url` every 0.5 s with the same key
until `Ready`, then download `result.sample`. It knows nothing of the gateway: pointing
`base_url` at one instead of https://api.bfl.ai is the only change.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

POLL_INTERVAL_S = 0.5
FAILED = ("Error", "Failed", "Request Moderated", "Content Moderated", "Task not found")


class GenerationFailed(Exception):
    """The task ended without an image; `answer` is the last poll answer."""

    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(f"generation failed: {answer['status']}")
        self.answer = answer


@dataclass(frozen=True)
class Generated:
    task: dict[str, Any]
    """The submit answer: `id` and `polling_url`."""
    result: dict[str, Any]
    """The `Ready` poll answer."""
    image: bytes
    """The bytes of `result.sample`."""


def generate(
    base_url: str, key: str, model: str, body: dict[str, Any], timeout_s: float = 60.0
) -> Generated:
    """Submit one task, wait for it as BFL's docs do, and download its sample."""
    headers = {"accept": "application/json", "x-key": key}
    with httpx.Client(timeout=30.0) as http:
        submitted = http.post(f"{base_url}/v1/{model}", headers=headers, json=body)
        submitted.raise_for_status()
        task = submitted.json()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
            answer = http.get(task["polling_url"], headers=headers, params={"id": task["id"]})
            result = answer.json()
            if result["status"] == "Ready":
                sample = http.get(result["result"]["sample"])
                sample.raise_for_status()
                return Generated(task, result, sample.content)
            if result["status"] in FAILED:
                raise GenerationFailed(result)
        raise TimeoutError(f"task {task['id']} not ready within {timeout_s:g} s")
