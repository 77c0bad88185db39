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
        """The gateway's own error for an upstream answer; upstream text only once redacted."""
        status = response.status_code
        error = (json_body(response) or {}).get("error") if status < 500 else None
        error = error if isinstance(error, dict) else {}
        said = self.redactor.detail(error.get("message"))
        if status in (400, 404, 422):
            param = error.get("param")
            param = param if isinstance(param, str) and param.isidentifier() else None
            return InvalidRequest(f"The upstream refused the request{said}.", param=param)
        if status == 401:
            return UpstreamRejected("bad_key", f"{self.name}: key refused (401){said}")
        if status == 402:
            return UpstreamRejected("no_credit", f"{self.name}: no credit (402){said}")
        if status == 403:
            problem = key_problem(error)
            if problem is not None:
                return UpstreamRejected(problem, f"{self.name}: key refused (403){said}")
            return ContentPolicyViolation(
                f"The request was rejected by the upstream's content moderation{said}."
            )
        if status == 413:
            return RequestTooLarge(f"The upstream refused the request as too large{said}.")
        if status == 429:
            if error.get("code") == "insufficient_quota":
                return UpstreamRejected("no_credit", f"{self.name}: out of credit (429){said}")
            return UpstreamRejected(
                "rate_limited", f"{self.name}: rate limited", retry_after(response)
            )
        if status in (502, 503):
            return UpstreamRejected("overloaded", f"{self.name}: unavailable ({status})")
        return UpstreamError(f"The upstream {self.name} failed (HTTP {status}).")


KEY_PROBLEM_CODES = frozenset(
    {
        "insufficient_user_quota",
        "pre_consume_token_quota_failed",
        "insufficient_quota",
        "quota_exceeded",
        "insufficient_balance",
        "model_not_allowed",
        "access_denied",
        "token_not_allowed",
    }
)
_QUOTA_WORDS = ("quota", "credit", "balance", "额度", "余额")
_PERMISSION_WORDS = ("permission", "not allowed to use", "无权")


def key_problem(error: dict[str, Any]) -> str | None:
    """`no_credit` or `bad_key` when an aggregator's 403 speaks of the key, else None.

    Aggregators built on one-api/new-api answer 403 both for moderation and for a key out of
    quota or not entitled to the model (SPEC 5); only the body tells them apart.
    """
    code = str(error.get("code") or "").lower()
    text = f"{code} {error.get('message') or ''}".lower()
    if any(word in text for word in _PERMISSION_WORDS) and "quota" not in text:
        return "bad_key"
    if code in KEY_PROBLEM_CODES or any(word in text for word in _QUOTA_WORDS):
        return "no_credit"
    return None
