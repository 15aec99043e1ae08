"""Back ends: the canonical request/response in each upstream's wire format, and back.

Pure translation, no I/O: `gemini` (Gemini API and Cloud Code, which wraps the same payloads),
`openai` (any OpenAI-compatible Chat Completions server), `schema` (JSON Schema -> what Gemini
accepts). Each back end also parses its upstream's error bodies into `UpstreamError` and has one
stream state machine implementing `StreamDecoder`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from ..protocol import canonical as c


class StreamDecoder(Protocol):
    """One upstream stream direction: SSE `data` payloads in, canonical stream events out."""

    def feed(self, payload: str) -> list[c.StreamEvent]:
        """One SSE event's data; raises UpstreamError for a payload that is or reports a failure."""
        ...

    def finish(self) -> list[c.StreamEvent]:
        """The stream ended; raises UpstreamError if the answer was not complete."""
        ...


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def parse_duration(value: Any) -> float | None:
    """Google's protobuf Duration in JSON (`retryDelay: "1.5s"`) -> seconds."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1))
    return None


def retry_after_header(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (OpenAI's) or `retry-after` (seconds) -> seconds."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return max(0.0, float(raw) * scale)
            except ValueError:
                continue
    return None
