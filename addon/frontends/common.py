"""Rules every front end shares: media URLs, tool-call arguments, stop lists, usage, SSE framing."""

from __future__ import annotations

import json
from typing import Any

from ..protocol import canonical as c
from ..protocol.errors import bad_request


def media_from_url(url: str, param: str) -> c.MediaPart:
    """Accept data: URLs and http(s) URLs only: a gateway must never read local paths (file:, /etc/...)."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        if not sep or ";base64" not in header:
            raise bad_request("Image data URLs must be base64 encoded (data:<mime>;base64,<data>).", param)
        return c.MediaPart(mime_type=header.split(";")[0] or None, data=data)
    if url.startswith(("http://", "https://")):
        return c.MediaPart(url=url)
    raise bad_request("Only http(s) and base64 data: URLs are accepted for media.", param, code="invalid_image_url")


def check_json_args(arguments: str, param: str) -> str:
    try:
        json.loads(arguments or "{}")
    except ValueError:
        raise bad_request("Tool call arguments must be a JSON object encoded as a string.", param) from None
    return arguments or "{}"


def check_stream_options(stream: bool | None, stream_options: Any) -> None:
    if stream_options is not None and not stream:
        raise bad_request("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                          "stream_options")


def stop_sequences(stop: str | list[str] | None) -> list[str]:
    out = [stop] if isinstance(stop, str) else list(stop or [])
    if len(out) > 4:
        raise bad_request("At most 4 stop sequences are allowed.", "stop")
    return out


def usage_json(u: c.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def sse_data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
