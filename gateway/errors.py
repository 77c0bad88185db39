"""The gateway's exceptions and the one OpenAI error envelope they render to.

Everything a client can see as an error is an `ApiError`; upstream, httpx and storage failures
are translated into one at the boundary where they happen. `UpstreamRejected` and
`UpstreamFailed` stay inside routing: they decide whether a job may be tried elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping


class ConfigError(Exception):
    """The configuration cannot run: raised at start-up, never at the first request."""


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape."""

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


class InvalidRequest(ApiError):
    code = "invalid_value"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class ModelNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class RequestTooLarge(ApiError):
    status = 413
    code = "request_too_large"


class RequestTimeout(ApiError):
    status = 408
    code = "request_timeout"


class AuthenticationFailed(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ApiError):
    status = 403
    type = "permission_error"
    code = "model_not_allowed"


class Conflict(ApiError):
    status = 409
    code = "idempotency_conflict"


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QuotaExceeded(ApiError):
    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"


class ContentPolicyViolation(InvalidRequest):
    code = "content_policy_violation"


class ServerError(ApiError):
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


class UpstreamRejected(Exception):
    """The upstream did not accept the job (nothing charged): another key or upstream may.

    `reason` is one of: rate_limited, bad_key, no_credit, unreachable, busy.
    """

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
