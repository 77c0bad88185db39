"""The OpenAI-style FLUX aggregator (APIYI-like): one synchronous call, one image, one link."""

from __future__ import annotations

from typing import Any

import httpx

from gateway.errors import (
    ContentPolicyViolation,
    InvalidRequest,
    RequestTooLarge,
    UpstreamError,
    UpstreamRejected,
)
from gateway.settings import UpstreamSettings
from gateway.upstreams.base import Upstream, UpstreamResult
from gateway.upstreams.http import json_body, retry_after, transport_failure


class OpenAIImagesUpstream(Upstream):
    kind = "openai-images"

    def __init__(self, settings: UpstreamSettings, client: httpx.AsyncClient) -> None:
        super().__init__(settings, client)
        self.url = httpx.URL(f"{settings.base_url}/images/generations")

    async def generate(self, body: dict[str, Any], key: str) -> UpstreamResult:
        try:
            response = await self.post_json(
                self.url, body, headers={"authorization": f"Bearer {key}"}
            )
        except httpx.TransportError as exc:
            raise transport_failure(exc, self.name) from exc
        if response.status_code == 200:
            return self._result(response)
        raise self._failure(response)

    def _result(self, response: httpx.Response) -> UpstreamResult:
        payload = json_body(response)
        try:
            item = payload["data"][0]
            url = item["url"]
        except (TypeError, KeyError, IndexError):
            raise UpstreamError(
                f"The upstream {self.name} answered without a result link."
            ) from None
        if not isinstance(url, str):
            raise UpstreamError(f"The upstream {self.name} answered without a result link.")
        seed = item.get("seed")
        return UpstreamResult(
            url, seed if isinstance(seed, int) else None, item.get("revised_prompt")
        )

    def _failure(self, response: httpx.Response) -> Exception:
        status = response.status_code
        error = (json_body(response) or {}).get("error") if status < 500 else None
        error = error if isinstance(error, dict) else {}
        message = str(error.get("message") or f"HTTP {status}")
        if status in (400, 404, 422):
            param = error.get("param") if isinstance(error.get("param"), str) else None
            return InvalidRequest(f"The upstream refused the request: {message}", param=param)
        if status == 401:
            return UpstreamRejected("bad_key", f"{self.name}: key refused (401)")
        if status == 402:
            return UpstreamRejected("no_credit", f"{self.name}: no credit (402)")
        if status == 403:
            return ContentPolicyViolation(
                f"The request was rejected by the upstream's content moderation: {message}"
            )
        if status == 413:
            return RequestTooLarge(f"The upstream refused the request as too large: {message}")
        if status == 429:
            if error.get("code") == "insufficient_quota":
                return UpstreamRejected("no_credit", f"{self.name}: out of credit (429)")
            return UpstreamRejected(
                "rate_limited", f"{self.name}: rate limited", retry_after(response)
            )
        if status in (502, 503):
            return UpstreamRejected("unreachable", f"{self.name}: unavailable ({status})")
        return UpstreamError(f"The upstream {self.name} failed (HTTP {status}).")
