"""Rules every front end shares: media URLs, tool-call arguments, stop lists, usage, SSE framing."""

from __future__ import annotations

import json
from typing import Any

from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.errors import bad_request


def media_from_url(url: str, param: str, kind: c.MediaKind = "image", filename: str | None = None) -> c.MediaPart:
    """Accept data: URLs and http(s) URLs only: a gateway must never read local paths (file:, /etc/...)."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        if not sep or ";base64" not in header:
            raise bad_request("Image data URLs must be base64 encoded (data:<mime>;base64,<data>).", param)
        return c.MediaPart(mime_type=header.split(";")[0] or None, data=data, kind=kind, filename=filename)
    if url.startswith(("http://", "https://")):
        return c.MediaPart(url=url, kind=kind, filename=filename)
    raise bad_request("Only http(s) and base64 data: URLs are accepted for media.", param, code="invalid_image_url")


# ---- freeform ("custom") tools -------------------------------------------------------------
# Upstreams here only know JSON function tools, so a freeform tool (Codex's apply_patch) is
# offered as a function with one string parameter; its calls are unwrapped back to raw text.

CUSTOM_INPUT = "input"


def custom_tool(name: str, description: str | None, fmt: dict[str, Any] | None) -> c.Tool:
    """A freeform tool as a function taking its raw text in `input`, the grammar in the description."""
    hint = (f"This tool takes raw text, not JSON: put the complete text in the `{CUSTOM_INPUT}` argument, "
            "exactly as the tool expects it.")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        syntax = fmt.get("syntax") if isinstance(fmt.get("syntax"), str) else "lark"
        hint += f" The text must match this {syntax} grammar:\n{fmt['definition']}"
    params = {"type": "object", "properties": {CUSTOM_INPUT: {"type": "string", "description":
              "The raw input text of the tool."}}, "required": [CUSTOM_INPUT]}
    return c.Tool(name, f"{description}\n\n{hint}" if description else hint, params)


def custom_arguments(text: str) -> str:
    """A freeform call's raw input -> the JSON arguments of its function form."""
    return json.dumps({CUSTOM_INPUT: text}, ensure_ascii=False)


def custom_input(arguments: str) -> str:
    """The JSON arguments of a freeform tool's function form -> the raw input text."""
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return arguments
    if isinstance(args, dict):
        if isinstance(args.get(CUSTOM_INPUT), str):
            return args[CUSTOM_INPUT]
        texts = [v for v in args.values() if isinstance(v, str)]
        if len(args) == 1 and texts:  # the model named the one parameter differently
            return texts[0]
        if not args:
            return ""
    return arguments


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
    return b"data: " + jsonfast.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"
