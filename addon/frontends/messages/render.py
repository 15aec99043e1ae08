"""Canonical answers -> Anthropic's Message object, and errors -> Anthropic's error object.

Shared by the whole answer (`render`) and the stream encoder (stream.py): stop reasons, usage,
content blocks, the error shape. Wire rules (Anthropic's API reference and the `anthropic`
SDK's types): `stop_reason` is end_turn / max_tokens / stop_sequence / tool_use / refusal;
`usage.input_tokens` excludes `cache_read_input_tokens` (their sum is the prompt); output tokens
include thinking; a `thinking` block always has a `signature` string; errors are
`{"type": "error", "error": {"type", "message"}, "request_id"}` with a `request-id` header.
"""

from __future__ import annotations

from typing import Any

from ...protocol import canonical as c
from ...protocol import jsonfast
from ...protocol.errors import GatewayError
from .ids import message_id, server_tool_id, tool_id_out
from .parse import Context

# Gemini (through the canonical finish reason) -> Anthropic. Gemini does not say which stop
# sequence ended the text, so a stop there reads as end_turn.
STOP_REASONS: dict[str, str] = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                                "content_filter": "refusal"}

# status -> Anthropic error type (docs: Errors). The gateway's 503 (every upstream failing or
# overloaded) is Anthropic's 529 overloaded_error, which Claude Code and the SDKs retry with backoff.
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                429: "rate_limit_error", 504: "timeout_error", 529: "overloaded_error"}


def error_status(status: int) -> int:
    return 529 if status == 503 else status


def error_object(err: GatewayError) -> dict[str, Any]:
    status = error_status(err.status)
    kind = _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}}


def error_body(err: GatewayError, request_id: str) -> bytes:
    return jsonfast.dumps({**error_object(err), "request_id": request_id})


def usage_json(u: c.Usage, grounding: c.Grounding | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"input_tokens": max(u.input_tokens - u.cached_tokens, 0),
                           "cache_creation_input_tokens": 0, "cache_read_input_tokens": u.cached_tokens,
                           "output_tokens": u.output_tokens}
    if grounding is not None:
        out["server_tool_use"] = {"web_search_requests": max(len(grounding.queries), 1), "web_fetch_requests": 0}
    return out


def thinking_block(text: str, signature: c.Signature | None) -> dict[str, Any]:
    # The signature field carries the key of the stored Gemini signature (see parse.signature_ref).
    return {"type": "thinking", "thinking": text, "signature": (signature.key or "") if signature else ""}


def tool_use_block(call: c.ToolCall, input_: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id_out(call.id), "name": call.name, "input": input_}


def citations(text: str, grounding: c.Grounding | None) -> list[dict[str, Any]]:
    if grounding is None:
        return []
    return [{"type": "web_search_result_location", "url": x.url, "title": x.title, "encrypted_index": "",
             "cited_text": text[x.start:x.end]} for x in grounding.citations]


def search_blocks(grounding: c.Grounding, tool_name: str) -> list[dict[str, Any]]:
    """What Google Search did, as Anthropic reports its web search: the call and its results."""
    use_id = server_tool_id()
    query = grounding.queries[0] if grounding.queries else ""
    results = [{"type": "web_search_result", "url": url, "title": title, "encrypted_content": "", "page_age": None}
               for url, title in grounding.sources]
    return [{"type": "server_tool_use", "id": use_id, "name": tool_name, "input": {"query": query}},
            {"type": "web_search_tool_result", "tool_use_id": use_id, "content": results}]


def _arguments(call: c.ToolCall) -> Any:
    try:
        value = jsonfast.loads(call.arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def render(completion: c.Completion, ctx: Context) -> dict[str, Any]:
    choice = completion.choices[0] if completion.choices else c.Choice(finish_reason="content_filter")
    content: list[dict[str, Any]] = []
    if choice.reasoning and ctx.thinking:
        content.append(thinking_block(choice.reasoning, choice.reasoning_signature))
    if choice.grounding is not None and ctx.web_search:
        content += search_blocks(choice.grounding, ctx.web_search)
    if choice.text:
        block: dict[str, Any] = {"type": "text", "text": choice.text}
        cited = citations(choice.text, choice.grounding)
        if cited:
            block["citations"] = cited
        content.append(block)
    content += [tool_use_block(tc, _arguments(tc)) for tc in choice.tool_calls]
    return {"id": message_id(), "type": "message", "role": "assistant", "model": ctx.model, "content": content,
            "stop_reason": STOP_REASONS[choice.finish_reason], "stop_sequence": None,
            "usage": usage_json(completion.usage, choice.grounding if ctx.web_search else None)}
