"""Black Forest Labs' native API: submit a job, then poll its `polling_url` until it ends.

A submit answered with a polling URL means the job was accepted: from then on any failure may
have been charged, so the job is never handed to another key or upstream. Polls are free, so a
failed poll is simply tried again while the deadline allows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.catalog import REFERENCE_KEYS
from gateway.errors import (
    ContentPolicyViolation,
    InvalidRequest,
    RequestTooLarge,
    UpstreamError,
    UpstreamRejected,
    UpstreamTimeout,
)
from gateway.jobs import accepted
from gateway.keys import fingerprint
from gateway.pricing import credits_micros
from gateway.upstreams.base import Upstream, UpstreamResult
from gateway.upstreams.http import json_body, retry_after, transport_failure

FIRST_POLL_S = 0.5
POLL_BACKOFF = 1.5
MAX_POLL_S = 2.0
MIN_POLL_TIMEOUT_S = 0.5
POLL_RETRIES = 3
MODERATED = frozenset({"Request Moderated", "Content Moderated"})
FAILED = frozenset({"Error", "Failed", "Task not found"})


class BflUpstream(Upstream):
    kind = "bfl"

    async def generate(self, body: dict[str, Any], key: str) -> UpstreamResult:
        deadline = time.monotonic() + self.settings.timeout_s
        polling_url, cost = await self._submit(body["model"], _payload(body), key)
        await accepted.report(accepted.Accepted(self.name, fingerprint(key), polling_url, cost))
        result = await self._wait(polling_url, key, deadline, body["prompt"])
        return dataclasses.replace(result, cost_micros=cost)

    async def resume(
        self, polling_url: str, key: str, prompt: str, cost_micros: int | None, left_s: float
    ) -> UpstreamResult:
        """Finish a job another replica submitted: poll its stored URL with the same key for
        what is left of the upstream's timeout. Nothing is submitted again."""
        self._check_poll_host(polling_url)
        result = await self._wait(polling_url, key, time.monotonic() + left_s, prompt)
        return dataclasses.replace(result, cost_micros=cost_micros)

    async def check_key(self, key: str) -> bool:
        """A key works again once `/v1/credits` shows a positive balance."""
        try:
            response = await self.client.get(
                f"{self.settings.base_url}/v1/credits", headers={"x-key": key}
            )
        except httpx.TransportError:
            return False
        answer = json_body(response)
        credits = answer.get("credits") if isinstance(answer, dict) else None
        return response.status_code == 200 and isinstance(credits, int | float) and credits > 0

    async def _submit(
        self, model: str, payload: dict[str, Any], key: str
    ) -> tuple[str, int | None]:
        """The job's polling URL and, when BFL reports it, its cost in micro-USD."""
        try:
            response = await self.post_json(
                f"{self.settings.base_url}/v1/{model}", payload, headers={"x-key": key}
            )
        except httpx.TransportError as exc:
            raise transport_failure(exc, self.name) from exc
        if response.status_code != 200:
            raise self._refusal(response)
        answer = json_body(response)
        url = answer.get("polling_url") if isinstance(answer, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise UpstreamError(f"The upstream {self.name} accepted the job without a polling URL.")
        self._check_poll_host(url)
        cost = answer.get("cost")
        reported = isinstance(cost, int | float) and not isinstance(cost, bool) and cost >= 0
        return url, credits_micros(cost) if reported else None

    def _check_poll_host(self, url: str) -> None:
        """The key goes only to the submit host and `poll_hosts`: elsewhere it would leave BFL."""
        host = (urlsplit(url).hostname or "").lower()
        own = (urlsplit(self.settings.base_url).hostname or "").lower()
        if host == own or any(fnmatch.fnmatch(host, p.lower()) for p in self.settings.poll_hosts):
            return
        raise UpstreamError(
            f"The upstream {self.name} named a polling host outside poll_hosts ({host!r}); "
            "the job was not polled, so the key stayed with BFL."
        )

    def _refusal(self, response: httpx.Response) -> Exception:
        """Why a submit was not accepted, as the error that decides where the job goes next."""
        status = response.status_code
        if status in (401, 403):
            return UpstreamRejected("bad_key", f"{self.name}: key refused ({status})")
        if status == 402:
            return UpstreamRejected("no_credit", f"{self.name}: no credit (402)")
        if status == 429:
            return UpstreamRejected(
                "rate_limited", f"{self.name}: rate limited", retry_after(response)
            )
        if status in (400, 422):
            message, param = _detail(json_body(response))
            said = self.redactor.detail(message)
            return InvalidRequest(f"The upstream refused the request{said}.", param=param)
        if status == 413:
            return RequestTooLarge("The upstream refused the request as too large.")
        if status in (502, 503):
            return UpstreamRejected("overloaded", f"{self.name}: unavailable ({status})")
        return UpstreamError(f"The upstream {self.name} failed (HTTP {status}).")

    async def _wait(
        self, polling_url: str, key: str, deadline: float, prompt: str
    ) -> UpstreamResult:
        """Poll until the job ends: after 0.5 s, then ×1.5 up to 2 s apart, until the deadline."""
        delay = FIRST_POLL_S
        misses = 0
        while True:
            await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            answer = await self._poll(polling_url, key, deadline)
            if answer is None:
                misses += 1
                if misses > POLL_RETRIES:
                    raise UpstreamError(f"The upstream {self.name} stopped reporting on the job.")
            else:
                misses = 0
                result = self._ended(answer, prompt)
                if result is not None:
                    return result
            if time.monotonic() >= deadline:
                raise UpstreamTimeout(
                    f"The upstream {self.name} did not finish the job within "
                    f"{self.settings.timeout_s:g} s."
                )
            delay = min(MAX_POLL_S, delay * POLL_BACKOFF)

    async def _poll(self, url: str, key: str, deadline: float) -> dict[str, Any] | None:
        """One poll's answer, or None when this poll failed in a way the next may not."""
        timeout = max(MIN_POLL_TIMEOUT_S, deadline - time.monotonic())
        try:
            response = await self.client.get(url, headers={"x-key": key}, timeout=timeout)
        except httpx.TransportError:
            return None
        answer = json_body(response)
        if isinstance(answer, dict) and isinstance(answer.get("status"), str):
            return answer
        if response.status_code in (200, 429) or response.status_code >= 500:
            return None
        raise UpstreamError(
            f"The upstream {self.name} refused to report on the job (HTTP {response.status_code})."
        )

    def _ended(self, answer: dict[str, Any], prompt: str) -> UpstreamResult | None:
        """The result of a Ready job, an error for a final status, or None while it runs."""
        status = answer["status"]
        if status in MODERATED:
            raise ContentPolicyViolation(
                f"The request was rejected by the upstream's content moderation ({status})."
            )
        if status in FAILED:
            raise UpstreamError(f"The upstream {self.name} ended the job with status '{status}'.")
        if status != "Ready":
            return None
        result = answer.get("result")
        if not isinstance(result, dict) or not isinstance(result.get("sample"), str):
            raise UpstreamError(f"The upstream {self.name} reported Ready without a result link.")
        seed = result.get("seed")
        revised = result.get("prompt")
        return UpstreamResult(
            result["sample"],
            seed if isinstance(seed, int) else None,
            revised if isinstance(revised, str) and revised != prompt else None,
        )


def _payload(body: dict[str, Any]) -> dict[str, Any]:
    """BFL takes the model in the path, and reference images as a URL or bare base64."""
    return {
        name: _bare_base64(value) if name in REFERENCE_KEYS else value
        for name, value in body.items()
        if name != "model"
    }


def _bare_base64(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("data:"):
        _, marker, data = value.partition(";base64,")
        if marker:
            return data
    return value


def _detail(answer: Any) -> tuple[str | None, str | None]:
    """The message and offending field of a BFL 400/422 (`{"detail": str | [{loc, msg}]}`)."""
    detail = answer.get("detail") if isinstance(answer, dict) else None
    if isinstance(detail, str):
        return detail, None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = detail[0].get("loc")
        param = loc[-1] if isinstance(loc, list) and len(loc) > 1 else None
        message = detail[0].get("msg")
        message = message if isinstance(message, str) else None
        if isinstance(param, str) and param.isidentifier():
            return f"{param}: {message or 'invalid'}", param
        return message, None
    return None, None
