"""What every emulated endpoint shares: reading requests, error bodies per flavour, the
per-request prologue (log, fault rule, auth) and SSE stream writing with cuts and delays."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .state import STATE, EmulatorState

# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def rand_id(n: int = 12) -> str:
    return secrets.token_hex(n)


def bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


async def read_body(request: web.Request) -> tuple[Any, bool]:
    """Parsed body (JSON, or form dict for form posts) and whether parsing succeeded."""
    raw = await request.read()
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        return {k: form.get(k) for k in form.keys()}, True
    if not raw:
        return None, True
    try:
        return json.loads(raw), True
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace"), False


# --------------------------------------------------------------------------------------
# Errors, one shape per upstream flavour
# --------------------------------------------------------------------------------------

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
GOOGLE_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
         "or other valid authentication credential.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}
OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                404: "invalid_request_error", 429: "requests"}
OPENAI_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
OAUTH_CODES = {400: "invalid_request", 401: "invalid_client", 403: "access_denied",
               429: "rate_limit_exceeded", 503: "temporarily_unavailable"}


def google_error_body(code: int, message: str | None = None, details: list[dict] | None = None,
                      retry_delay: str | None = None) -> dict[str, Any]:
    details = list(details or [])
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    err: dict[str, Any] = {
        "code": code,
        "message": message or GOOGLE_MESSAGES.get(code, "Unknown error."),
        "status": GOOGLE_STATUS.get(code, "UNKNOWN"),
    }
    if details:
        err["details"] = details
    return {"error": err}


def error_response(flavor: str, code: int, message: str | None = None, *, details: list[dict] | None = None,
                   retry_delay: str | None = None, retry_after: str | None = None,
                   openai_code: str | None = None, param: str | None = None) -> web.Response:
    """An error in the wire format of the endpoint family that was called."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    if flavor in ("gemini", "cloudcode"):
        body: Any = google_error_body(code, message, details, retry_delay)
        if flavor == "cloudcode":
            body = [body]  # the v1internal backend returns errors wrapped in an array
    elif flavor == "openai":
        default = "The server had an error while processing your request." if code >= 500 else f"Error {code}"
        body = {"error": {"message": message or default,
                          "type": OPENAI_TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error"),
                          "param": param, "code": openai_code or OPENAI_CODES.get(code)}}
    else:  # oauth
        body = {"error": OAUTH_CODES.get(code, "server_error"),
                "error_description": message or f"Error {code}"}
    return web.json_response(body, status=code, headers=headers)


# --------------------------------------------------------------------------------------
# Per-request pipeline shared by every emulated endpoint
# --------------------------------------------------------------------------------------


@dataclass
class Call:
    request: web.Request
    state: EmulatorState
    flavor: str
    rule: dict[str, Any] | None
    key: str | None  # the API key, access token or refresh token the request carried

    def mod(self, name: str) -> Any:
        return (self.rule or {}).get(name)

    @property
    def credential(self) -> str | None:
        """Who thought signatures are bound to: the backend (the Gemini API, Cloud Code and Vertex AI
        encrypt differently: gemini-cli's Config.refreshAuth) and the API key, or for an access
        token the user or service account it was issued to (tokens change, the account does not)."""
        if self.key is None:
            return None
        path = self.request.path
        backend = "cloudcode" if path.startswith("/v1internal") else "gemini" if path.startswith("/v1beta") \
            else "vertex"
        return f"{backend}:{self.state.token_users.get(self.key, self.key)}"

    @property
    def reply(self) -> dict[str, Any] | None:
        return self.mod("reply")


async def begin(request: web.Request, flavor: str, body: Any, key: str | None, model: str | None,
                auth: Callable[[Call], web.Response | None] | None = None) -> tuple[Call, web.StreamResponse | None]:
    """Log the request, pick a fault rule and apply its pre-response effects, then check ``auth``.

    Returns the call context and, if the rule (status/drop) or the auth check decided the
    outcome, the response to return immediately.
    """
    state = request.app[STATE]
    state.requests += 1
    state.log.append({
        "time": time.time(), "path": request.path, "query": dict(request.query), "method": request.method,
        "headers": {k.lower(): v for k, v in request.headers.items()}, "body": body, "key": key,
    })
    rule = state.take_rule(request.path_qs, key, model)
    call = Call(request, state, flavor, rule, key)
    if call.mod("delay_ms"):
        await asyncio.sleep(call.mod("delay_ms") / 1000)
    if call.mod("drop"):
        return call, _drop(request)
    if call.mod("status") is not None:
        return call, error_response(flavor, int(call.mod("status")), call.mod("message"), details=call.mod("details"),
                                    retry_delay=call.mod("retry_delay"), retry_after=call.mod("retry_after"))
    return call, auth(call) if auth is not None else None


def _drop(request: web.Request) -> web.Response:
    """Close the socket with no response; aiohttp silently skips writing to a closed transport."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()


async def write_stream(call: Call, events: list[bytes], cut: int | None, content_type: str) -> web.StreamResponse:
    """Write SSE events one by one (flushing each); optionally die after ``cut`` events."""
    resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    await resp.prepare(call.request)
    delay = (call.mod("chunk_delay_ms") or 0) / 1000
    try:
        for i, event in enumerate(events):
            if cut is not None and i >= cut:
                break
            if i and delay:
                await asyncio.sleep(delay)
            await resp.write(event)
        if cut is not None:
            # Abrupt close: the chunked body never gets its terminator, like a dropped upstream.
            if call.request.transport is not None:
                call.request.transport.close()
            return resp
        await resp.write_eof()
    except ConnectionError:
        call.state.aborted_streams += 1  # client went away mid-stream; nothing to clean up
    return resp
