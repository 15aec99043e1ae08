"""Errors on both sides of the gateway.

GatewayError is what a client sees: every failure goes through it, so the body is always
{"error": {"message", "type", "param", "code"}} with a status the OpenAI SDKs map to the right
exception class. UpstreamError is what an upstream said (or that it could not be reached): plain
data that the back ends parse and the retry policy (addon/pool/policy.py) interprets.
"""

from __future__ import annotations

import json
from typing import Any

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


class GatewayError(Exception):
    """An error to be returned to the client as an OpenAI error object."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or error_type_for(status)
        self.headers = headers or {}

    def payload(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return json.dumps(self.payload(), ensure_ascii=False).encode()


def bad_request(message: str, param: str | None = None, code: str | None = "invalid_request") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


# An upstream's error text is kept up to this many characters (it may be a whole HTML page). It is
# cut *before* the secrets are known to be out of it, so the cut ends with CUT: the redactor then
# also removes a secret's beginning left just before it (addon/redact.py).
ERROR_TEXT_CHARS = 2000
CUT = "…"


def clip(text: str, limit: int = ERROR_TEXT_CHARS) -> str:
    """`text` at most `limit` characters, a cut marked with CUT."""
    return text if len(text) <= limit else text[:limit] + CUT


class UpstreamError(Exception):
    """An upstream answered with an error, or could not be reached (status 0)."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None,
                 reason: str | None = None, quota_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after  # seconds the upstream asked us to wait, if it said
        # Google's ErrorInfo reason ("RATE_LIMIT_EXCEEDED", "QUOTA_EXHAUSTED", "API_KEY_INVALID") or
        # else its status ("RESOURCE_EXHAUSTED"); OAuth's "invalid_grant"; a Gemini finishReason.
        self.reason = reason
        # Which quotas ran out: Google's QuotaFailure quotaIds and ErrorInfo quota_limit names
        # (e.g. "GenerateRequestsPerDayPerProjectPerModel-FreeTier").
        self.quota_ids = quota_ids


class StaleCredentials(UpstreamError):
    """An access token we believed valid was refused even after one refresh: rotate, but do not
    disable the account (a refresh that fails with invalid_grant is what disables it)."""


class UnusableAnswer(UpstreamError):
    """The upstream answered 200, but with nothing a client can use (a malformed function call, an
    empty answer): no account is at fault. `retry` says whether one more attempt may do better."""

    def __init__(self, message: str, *, reason: str, retry: bool = True) -> None:
        super().__init__(502, message, reason=reason)
        self.retry = retry

    @property
    def code(self) -> str:
        """The error code the client sees, e.g. "malformed_function_call"."""
        return (self.reason or "empty_response").lower()


class ShuttingDown(UnusableAnswer):
    """The gateway stops while a stream is still open: after its grace period the stream ends with
    the surface's error event (code `gateway_shutting_down`), like any stream failing mid-way."""

    def __init__(self) -> None:
        super().__init__("the gateway is shutting down; send the request again", reason="GATEWAY_SHUTTING_DOWN",
                         retry=False)


class CredentialsRejected(UpstreamError):
    """The account's own credentials were refused for good (e.g. an OAuth refresh answered
    invalid_grant): the account, not the request, is at fault."""
