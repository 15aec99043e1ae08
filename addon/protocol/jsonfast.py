"""JSON on the hot paths: every request and response body, every streamed chunk.

orjson rather than the standard library: per streamed chunk it serialises ~20x faster (0.3 vs
7.8 µs for a chat.completion.chunk) and parses ~3x faster, which was most of the gateway's own
per-chunk cost in streaming profiles. The output is compact UTF-8, as the standard library's
with ensure_ascii=False and tight separators. What orjson refuses (integers beyond 64 bits in a
client's JSON) falls back to the standard library, so nothing valid becomes an error.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

JSONDecodeError = json.JSONDecodeError  # orjson.JSONDecodeError subclasses it (a ValueError)


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """Raises json.JSONDecodeError (with the standard library's message and position)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # NaN/Infinity or a non-UTF-8 encoding the stdlib accepts; else its error
