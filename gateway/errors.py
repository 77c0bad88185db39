"""The gateway's one exception tree, and the OpenAI error envelope every member renders to.

    GatewayError                      the root: status, type, code, message, param, headers
    ├── ConfigError                   the configuration cannot run (start-up only)
    ├── InvalidRequest (400)          UnknownParameter, ModelNotFound (404), ContentPolicyViolation
    ├── AuthenticationFailed (401), PermissionDenied (403), NotFound (404), Conflict (409)
    ├── RequestTimeout (408), RequestTooLarge (413), HeadersTooLarge (431)
    ├── RateLimited (429), QuotaExceeded (429)
    └── ServerError (500)
        ├── ServiceUnavailable (503)  StateUnavailable, CacheUnavailable, UpstreamUnavailable,
        │                             JobInterrupted
        │                             └── UpstreamRejected (routing: try the next key)
        └── UpstreamError (502)       UpstreamTimeout (504), StorageError, RehostFailed

Layers raise these where a failure happens (httpx, aiohttp, redis and OS errors are translated
at that boundary); one handler renders any of them. `UpstreamRejected` and `RehostFailed` are
mostly handled inside routing and rehosting: they say whether a job may be tried elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """An error the gateway raises on purpose, answered to a client in OpenAI's shape."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigError(GatewayError):
    """The configuration cannot run: raised at start-up, never at the first request."""

    status = 500
    type = "server_error"
    code = "config_error"


class InvalidRequest(GatewayError):
    code = "invalid_value"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class ModelNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class RequestTooLarge(GatewayError):
    status = 413
    code = "request_too_large"


class RequestTimeout(GatewayError):
    status = 408
    code = "request_timeout"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class Conflict(GatewayError):
    status = 409
    code = "idempotency_conflict"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExceeded(GatewayError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class ContentPolicyViolation(InvalidRequest):
    code = "content_policy_violation"


class ServerError(GatewayError):
    status = 500
    type = "server_error"
    code = "internal_error"


class ServiceUnavailable(ServerError):
    status = 503
    code = "service_unavailable"


class UpstreamUnavailable(ServiceUnavailable):
    code = "upstream_unavailable"


class UpstreamError(ServerError):
    """The upstream failed after it may have charged the job: retrying could pay twice."""

    status = 502
    code = "upstream_error"

    def __init__(self, message: str, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.headers["x-should-retry"] = "false"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class StorageError(UpstreamError):
    """The upstream made (and charged) the image but the cache could not keep it: a retry
    would pay again for the same image."""

    code = "storage_error"


class StateUnavailable(ServiceUnavailable):
    """The state backend could not be reached; the caller decides between fail-open and
    fail-closed (SPEC 3), and fail-closed answers this 503."""

    code = "state_unavailable"


class JobInterrupted(ServiceUnavailable):
    """An async job's replica stopped where no other can resume it (SPEC 4.6): it cost
    nothing, and the client may submit it again."""

    code = "job_interrupted"


class CacheUnavailable(ServiceUnavailable):
    """Reading, listing or deleting failed in the storage behind the cache; callers may retry
    (503). A failed store is a `StorageError` instead: the image it held was already paid for."""

    code = "cache_unavailable"


class HeadersTooLarge(GatewayError):
    status = 431
    code = "request_header_fields_too_large"


class RehostFailed(UpstreamError):
    """A result could not be fetched or kept: `reason` names why (a metric label), and
    `retryable` whether the download may be tried again while the link lives."""

    def __init__(self, reason: str, detail: str, retryable: bool) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retryable = retryable


class UpstreamRejected(UpstreamUnavailable):
    """The upstream did not accept the job (nothing charged): another key or upstream may.

    `reason` is one of: rate_limited, bad_key, no_credit, unreachable, overloaded, busy,
    unavailable.
    """

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
