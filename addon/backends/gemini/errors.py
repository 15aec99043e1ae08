"""Google's error envelope (Gemini API, Vertex AI, Cloud Code, OAuth token endpoints) -> UpstreamError."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ...protocol.errors import ERROR_TEXT_CHARS, UpstreamError, clip
from .. import parse_duration, retry_after_header

_PLEASE_RETRY = re.compile(r"Please retry in ([0-9.]+(?:ms|s))")


def _google_details(err: dict[str, Any]) -> tuple[str | None, float | None, list[str], list[str]]:
    """(ErrorInfo reason, wait in seconds, quota ids, Help links) from a Google error's `details`."""
    reason, delay, reset, quota_ids, links = None, None, None, [], []
    for detail in err.get("details") or []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type", "")).strip()  # gemini-cli saw stray whitespace in @type
        if kind.endswith("RetryInfo"):
            delay = parse_duration(detail.get("retryDelay"))
        elif kind.endswith("QuotaFailure"):
            quota_ids += [str(v["quotaId"]) for v in detail.get("violations") or []
                          if isinstance(v, dict) and v.get("quotaId")]
        elif kind.endswith("Help"):  # Cloud Code's VALIDATION_REQUIRED names the page to open
            links += [str(link["url"]) for link in detail.get("links") or []
                      if isinstance(link, dict) and isinstance(link.get("url"), str)]
        elif kind.endswith("ErrorInfo"):
            reason = detail.get("reason") or reason
            meta = detail.get("metadata") if isinstance(detail.get("metadata"), dict) else {}
            if meta.get("quota_limit"):  # e.g. "GenerateContentRequestsPerMinutePerProjectPerRegion"
                quota_ids.append(str(meta["quota_limit"]))
            reset = parse_duration(meta.get("quotaResetDelay"))  # Cloud Code: "161h39m41.3s"
    return reason, delay if delay is not None else reset, quota_ids, links


def error_from(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """Gemini / Cloud Code error bodies: {"error": {...}} or a JSON array of them; OAuth token
    endpoints answer {"error": "invalid_grant", "error_description": ...}. Quota details (which
    quota ran out, when it resets) are kept as data for the retry policy (addon/pool/policy.py)."""
    message = clip(body[:4 * ERROR_TEXT_CHARS].decode("utf-8", "replace")) or f"HTTP {status}"
    reason, delay = None, None
    quota_ids: list[str] = []
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        message = clip(str(err.get("message") or message))
        info_reason, delay, quota_ids, links = _google_details(err)
        reason = info_reason or err.get("status")
        message += "".join(f" ({url})" for url in dict.fromkeys(links) if url not in message)
        if delay is None:  # the newer quota message says it in words: "Please retry in 38.96s."
            m = _PLEASE_RETRY.search(message)
            delay = parse_duration(m.group(1)) if m else None
    elif isinstance(data, dict) and isinstance(data.get("error"), str):  # OAuth token endpoint
        reason = data["error"]
        message = clip(str(data.get("error_description") or reason))
    if delay is None:
        delay = retry_after_header(headers)
    return UpstreamError(status, message, retry_after=delay, reason=reason, quota_ids=tuple(quota_ids))
