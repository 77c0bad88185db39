"""What both upstream kinds share at the HTTP boundary: reading answers and naming failures."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson

from gateway.errors import UpstreamError, UpstreamRejected, UpstreamTimeout


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta or HTTP date), or None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def json_body(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def transport_failure(exc: httpx.TransportError, upstream: str) -> Exception:
    """Without a connection the job was not accepted; once connected, it may have been charged.

    The transport (`gateway.upstreams.transport`) raises only `ConnectError` and
    `ConnectTimeout` before a connection exists; every later failure is a read-side error.
    """
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return UpstreamRejected("unreachable", f"{upstream}: cannot connect ({type(exc).__name__})")
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"The upstream {upstream} did not answer in time.")
    return UpstreamError(f"The upstream {upstream} broke off its answer ({type(exc).__name__}).")
