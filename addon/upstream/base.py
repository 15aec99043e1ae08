"""What every provider shares: the HTTP client, upstream errors, SSE streaming."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from ..protocol import canonical as c
from ..translate.sse import SSEParser

# Statuses after which another account may well succeed.
ROTATE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


class UpstreamError(Exception):
    """An upstream answered with an error, or could not be reached (status 0)."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.reason = reason  # e.g. "invalid_grant", "RESOURCE_EXHAUSTED"

    @property
    def rotate(self) -> bool:
        return self.status == 0 or self.status in ROTATE_STATUSES or self.reason == "stale_token"

    @property
    def account_fault(self) -> bool:
        """The account's credentials are bad: take it out of rotation."""
        if self.reason == "stale_token":
            return False
        # The Gemini API answers a wrong or expired key with 400 INVALID_ARGUMENT + ErrorInfo API_KEY_INVALID.
        return self.status in (401, 403) or self.reason in ("invalid_grant", "API_KEY_INVALID")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_duration(value: Any) -> float | None:
    """Google's `retryDelay` ("1.5s") -> seconds."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1))
    return None


def retry_after_header(headers: Mapping[str, str]) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                continue
    return None


def google_error(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """Gemini / Cloud Code error bodies: {"error": {...}} or a JSON array of them."""
    message, reason, delay = body.decode("utf-8", "replace")[:500] or f"HTTP {status}", None, None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        message = str(err.get("message") or message)
        reason = err.get("status")
        for detail in err.get("details") or []:
            if isinstance(detail, dict):
                delay = parse_duration(detail.get("retryDelay")) or delay
                reason = detail.get("reason") or reason
    elif isinstance(data, dict) and isinstance(data.get("error"), str):  # OAuth token endpoint
        reason = data["error"]
        message = data.get("error_description") or reason
    if delay is None:
        delay = retry_after_header(headers)
    return UpstreamError(status, message, retry_after=delay, reason=reason)


def retry_after_seconds(delay: float | None) -> str | None:
    return None if delay is None else str(max(1, math.ceil(delay)))


async def sse_payloads(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[str]]:
    """The `data` of each SSE event, batched per network read."""
    parser = SSEParser()
    async for chunk in chunks:
        events = parser.feed(chunk)
        if events:
            yield [e.data for e in events]
    tail = parser.flush()
    if tail:
        yield [e.data for e in tail]


StreamBatches = AsyncIterator[list[c.StreamEvent]]


async def event_batches(chunks: AsyncIterator[bytes],
                        decode: Callable[[str], list[c.StreamEvent]]) -> StreamBatches:
    """SSE payloads -> canonical event batches, one batch per network read.

    `decode` raises UpstreamError for a payload that reports or is a failure; the events
    decoded before it in the same read are still delivered first.
    """
    async for payloads in sse_payloads(chunks):
        batch: list[c.StreamEvent] = []
        failure: UpstreamError | None = None
        for payload in payloads:
            try:
                batch += decode(payload)
            except UpstreamError as err:
                failure = err
                break
        if batch:
            yield batch
        if failure is not None:
            raise failure
