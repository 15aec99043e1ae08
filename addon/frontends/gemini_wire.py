"""Google's side of the Gemini-native surface: its error envelope, its stream framings and its
model objects. Pure functions (no pool, no I/O)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from ..protocol import jsonfast
from ..protocol.errors import GatewayError, UpstreamError

log = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=UTF-8"  # what Google's API answers with
SSE_TYPE = "text/event-stream"

# google.rpc.Code names by HTTP status, as Google's APIs map them (the `status` of its errors);
# the gateway's own refusals that HTTP has a better word for keep their status with the closest name.
GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    405: "UNIMPLEMENTED", 409: "ABORTED", 411: "INVALID_ARGUMENT", 413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def google_status(status: int) -> str:
    if status in GOOGLE_STATUS:
        return GOOGLE_STATUS[status]
    return "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"


def error_object(err: GatewayError) -> dict[str, Any]:
    """{"error": {"code", "message", "status"}}; a wait the client should respect also as Google's
    RetryInfo detail (gemini-cli and google-genai's callers read `retryDelay` there)."""
    body: dict[str, Any] = {"code": err.status, "message": err.message, "status": google_status(err.status)}
    retry = err.headers.get("retry-after")
    if retry and retry.isdigit():
        body["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry}s"}]
    return {"error": body}


def error_answer(err: GatewayError) -> tuple[int, dict[str, str], bytes]:
    return err.status, {"content-type": JSON_TYPE, **err.headers}, jsonfast.dumps(error_object(err))


# ---- streams --------------------------------------------------------------------------------
# With `alt=sse` Google sends each GenerateContentResponse as one SSE event framed with CRLF and no
# terminator; without it, one JSON array whose elements arrive as they are generated. A failure
# after the first byte ends either with Google's error object, which google-genai raises as
# APIError (it checks every streamed chunk for a leading "error" key).

class SSEFraming:
    content_type = SSE_TYPE

    def __init__(self) -> None:
        self.started = False

    def event(self, obj: Any) -> bytes:
        self.started = True
        return b"data: " + jsonfast.dumps(obj) + b"\r\n\r\n"

    def close(self) -> bytes:
        return b""

    def fail(self, err: GatewayError) -> bytes:
        return self.event(error_object(err))


class ArrayFraming:
    content_type = JSON_TYPE

    def __init__(self) -> None:
        self.started = False

    def event(self, obj: Any) -> bytes:
        head = b",\r\n" if self.started else b"["
        self.started = True
        return head + jsonfast.dumps(obj)

    def close(self) -> bytes:
        return b"]" if self.started else b"[]"

    def fail(self, err: GatewayError) -> bytes:
        return self.event(error_object(err)) + b"]"


async def framed(batches: AsyncIterator[list[Any]], framing: SSEFraming | ArrayFraming, *,
                 on_event: Callable[[Any], Any], on_failure: Callable[[str], None],
                 redact: Callable[[str], str]) -> AsyncIterator[bytes]:
    """Upstream events (batched per network read) as the client's stream bytes. `on_event` sees
    each event before it goes out (and may be awaited: signatures are kept before the client can
    send them back)."""
    try:
        async for batch in batches:
            out = []
            for obj in batch:
                kept = on_event(obj)
                if kept is not None:
                    await kept
                out.append(framing.event(obj))
            if out:
                yield b"".join(out)
        yield framing.close()
    except UpstreamError as err:
        on_failure(redact(f"{err.status or 'conn'} {err.message}")[:120])
        status = err.status if 500 <= err.status <= 599 else 502
        yield framing.fail(GatewayError(status, redact(f"Upstream stream failed: {err.message}"),
                                        code="upstream_stream_error"))
    except Exception:  # a bug must still end the stream in Google's shape
        log.exception("Gemini-native stream failed")
        on_failure("internal error")
        yield framing.fail(GatewayError(500, "The gateway hit an internal error; see its log.", code="internal_error"))
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()


# ---- models ---------------------------------------------------------------------------------

def _is_embedding(name: str) -> bool:
    return "embedding" in name


def model_object(name: str, served_as: str) -> dict[str, Any]:
    """A google.ai.generativelanguage Model for a name the gateway serves (token limits are the
    upstream's and not known here, so they are left out)."""
    methods = (["embedContent", "batchEmbedContents", "countTokens"] if _is_embedding(served_as)
               else ["generateContent", "streamGenerateContent", "countTokens"])
    return {"name": f"models/{name}", "baseModelId": name, "version": "001", "displayName": name,
            "description": f"Served by the gateway's account pool as {served_as}.",
            "supportedGenerationMethods": methods}


def models_page(names: Iterable[str], resolve: Callable[[str], str], query: dict[str, str]) -> dict[str, Any]:
    """GET models: Google's list shape, paged by pageSize (default 50, at most 1000) and an
    opaque pageToken (here: the offset)."""
    names = list(names)
    try:
        size = int(query.get("pageSize") or 50)
        start = int(query.get("pageToken") or 0)
    except ValueError:
        raise GatewayError(400, "Invalid pageSize or pageToken.", code="invalid_request") from None
    size = 50 if size <= 0 else min(size, 1000)
    start = max(start, 0)
    page: dict[str, Any] = {"models": [model_object(n, resolve(n)) for n in names[start:start + size]]}
    if start + size < len(names):
        page["nextPageToken"] = str(start + size)
    return page
