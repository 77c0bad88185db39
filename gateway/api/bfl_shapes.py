"""Black Forest Labs' API shapes, for clients (SPEC 4.7): a BFL request body → the fields of
the gateway's own `ImageRequest`, the gateway's errors → BFL's `detail` answers, and a job →
BFL's poll answer. Nothing here touches HTTP or state, so each shape is checked on its own.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from gateway import media
from gateway.api.responses import JSONResponse
from gateway.catalog import REFERENCE_KEYS
from gateway.errors import GatewayError, InvalidRequest, QuotaExceeded, UnknownParameter
from gateway.jobs.record import JobRecord

BFL_FIELDS = frozenset(
    {
        "prompt",
        *REFERENCE_KEYS,
        "width",
        "height",
        "aspect_ratio",
        "seed",
        "safety_tolerance",
        "output_format",
        "prompt_upsampling",
        "steps",
        "guidance",
    }
)
"""What BFL's model endpoints take and the gateway honours; anything else is a 422."""

WEBHOOK_FIELDS = ("webhook_url", "webhook_secret")
SNIFF_CHARS = 16  # base64 of the first 12 bytes: enough to sniff PNG, JPEG and WebP
LINK_SCHEMES = ("https://", "http://", "data:")

_DETAIL_TYPES = {
    "unknown_parameter": "extra_forbidden",
    "missing_required_parameter": "missing",
    "invalid_json": "json_invalid",
}


def image_fields(model: str, body: object) -> dict[str, Any]:
    """The `ImageRequest` fields of a BFL body, for `gateway.requests.validate`.

    Unknown fields are refused rather than ignored (BFL's FLUX.2 schemas let them pass): a
    typo must not silently cost money. Bare base64 references become data URLs of their
    sniffed type. The answer is always a durable link, which `result.sample` names.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.", code="invalid_json")
    for name in body:
        if name in WEBHOOK_FIELDS:
            raise InvalidRequest(
                f"'{name}' is not supported here: poll polling_url, or send the request to "
                "POST /v1/images/generations with 'Prefer: respond-async' and a webhook_url, "
                "which the gateway signs with your team's secret.",
                param=name,
                code="unsupported_parameter",
            )
        if name not in BFL_FIELDS:
            raise UnknownParameter(f"Unknown field '{name}'.", param=str(name))
    fields = dict(body)
    for key in REFERENCE_KEYS:
        value = fields.get(key)
        if isinstance(value, str) and not value.startswith(LINK_SCHEMES):
            fields[key] = _bare_base64(key, value)
    return {**fields, "model": model, "response_format": "url"}


def _bare_base64(key: str, value: str) -> str:
    """A bare base64 image as the data URL of its sniffed type; the rest of the value is
    checked (decoded whole) with every other data URL, in `gateway.requests`."""
    try:
        head = base64.b64decode(value[:SNIFF_CHARS], validate=True)
    except (binascii.Error, ValueError):
        head = b""
    content_type = media.sniff(head[: media.SNIFF_BYTES])
    if content_type is None:
        raise InvalidRequest(
            f"'{key}' must be an https URL, a data URL or a base64-encoded PNG, JPEG or WebP "
            "image.",
            param=key,
        )
    return f"data:{content_type};base64,{value}"


def error_response(exc: GatewayError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A gateway error in BFL's shape: a 422 `detail` list for bad input, 402 for an exhausted
    quota or budget (BFL's "insufficient credits"), else the same status with a `detail` text."""
    merged = {**exc.headers, **(headers or {})}
    if isinstance(exc, InvalidRequest) and exc.status == 400:
        return JSONResponse({"detail": [invalid(["body"], exc)]}, 422, merged)
    status = 402 if isinstance(exc, QuotaExceeded) else exc.status
    return JSONResponse({"detail": exc.message}, status, merged)


def invalid(loc: list[str], exc: GatewayError) -> dict[str, Any]:
    """One entry of a 422 `detail` list, located at the offending field when there is one."""
    where = [*loc, exc.param] if exc.param else loc
    kind = _DETAIL_TYPES.get(exc.code or "", "value_error")
    return {"loc": where, "msg": exc.message, "type": kind}


def auth_refusal(key_given: bool, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """BFL's answers for keys: 401 when none was sent, 403 when it is not a client key."""
    if key_given:
        return JSONResponse({"detail": "Incorrect API key provided."}, 403, headers)
    detail = "Not authenticated: send your key as 'x-key: <key>'."
    return JSONResponse({"detail": detail}, 401, headers)


def not_found(job_id: str) -> JSONResponse:
    """BFL's answer for an unknown id, also for another team's job: its existence is private."""
    return JSONResponse(_poll(job_id, "Task not found"), 404)


def poll_body(record: JobRecord) -> dict[str, Any]:
    """A job as BFL's `get_result` answers it: Pending until it ends, then Ready with the
    durable link as `result.sample`, Request Moderated, or Error with the gateway's error."""
    if record.status == "succeeded":
        return _poll(record.id, "Ready", result=_sample(record))
    if record.status == "failed":
        error = record.public()["error"]
        moderated = error.get("code") == "content_policy_violation"
        return _poll(record.id, "Request Moderated" if moderated else "Error", details=error)
    return _poll(record.id, "Pending")


def _sample(record: JobRecord) -> dict[str, Any]:
    body = record.result or {}
    item = body["data"][0]
    settlement = record.settlement
    result = {
        "sample": item["url"],
        "seed": item.get("seed"),
        "prompt": settlement.prompt if settlement is not None else None,
    }
    if record.ended_at is not None:
        result |= {
            "start_time": record.created,
            "end_time": record.ended_at,
            "duration": max(0.0, record.ended_at - record.created),
        }
    return result


def _poll(job_id: str, status: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": job_id, "status": status, "result": None, "progress": None}
    return body | {"details": None, "preview": None} | fields
