"""Canonical <-> an OpenAI-compatible upstream's Chat Completions (vLLM, Ollama, LM Studio, OpenAI...)."""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from ..protocol import canonical as c
from ..protocol import jsonfast
from ..protocol.errors import ERROR_TEXT_CHARS, UpstreamError, bad_request, clip
from . import retry_after_header

LimitField = Literal["auto", "max_tokens", "max_completion_tokens"]
# OpenAI's reasoning models (o1, o3-mini, o4-mini, ...) and gpt-5* answer 400 "Unsupported parameter:
# 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
_COMPLETION_TOKENS_MODELS = re.compile(r"^(o\d|gpt-5)")
_OPENAI_HOSTS = ("api.openai.com", ".openai.azure.com")


def limit_field(model: str, base_url: str, setting: LimitField = "auto") -> str:
    """Which request field carries the output-token limit for this upstream.

    `auto`: `max_completion_tokens` for OpenAI itself (api.openai.com, Azure OpenAI: max_tokens is
    deprecated there and refused by reasoning models) and for o-series / gpt-5 names anywhere;
    `max_tokens` elsewhere, because Ollama reads only `max_tokens` and silently drops the other
    (its ChatCompletionRequest has no such field), while vLLM and LM Studio read both."""
    if setting != "auto":
        return setting
    host = urlsplit(base_url).hostname or ""
    if _COMPLETION_TOKENS_MODELS.match(model) or host.endswith(_OPENAI_HOSTS):
        return "max_completion_tokens"
    return "max_tokens"


def error_from(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """OpenAI-style error bodies ({"error": {"message", "type", "code"}}), or whatever text came."""
    message = clip(body[:4 * ERROR_TEXT_CHARS].decode("utf-8", "replace")) or f"HTTP {status}"
    reason = None
    try:
        data = json.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message = clip(str(err.get("message") or message))
            reason = err.get("code") or err.get("type")
        elif isinstance(err, str):
            message = clip(err)
    except ValueError:
        pass
    return UpstreamError(status, message, retry_after=retry_after_header(headers), reason=reason)


def completion_from_body(body: bytes) -> c.Completion:
    try:
        return completion_from(jsonfast.loads(body))
    except (ValueError, AttributeError, TypeError):
        raise UpstreamError(502, "Upstream returned a body that is not a chat completion.") from None


_AUDIO_FORMATS = {"audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/mp3": "mp3",
                  "audio/mpeg": "mp3"}


def _media(p: c.MediaPart) -> dict[str, Any]:
    """Each kind as its own Chat Completions part: images as image_url, audio as input_audio,
    files as file (OpenAI, vLLM and Ollama refuse or misread audio/PDF data in an image_url)."""
    mime = p.mime_type or "application/octet-stream"
    if p.kind == "image":
        return {"type": "image_url", "image_url": {"url": p.url or f"data:{mime};base64,{p.data}"}}
    if p.data is None:  # Chat Completions has no file_url (only file_data or an uploaded file_id)
        raise bad_request(f"An OpenAI-compatible upstream takes {p.kind}s only inline (base64 data), not "
                          "by URL.", "input")
    if p.kind == "audio":
        fmt = _AUDIO_FORMATS.get(mime, mime.rpartition("/")[2])
        return {"type": "input_audio", "input_audio": {"data": p.data, "format": fmt}}
    name = p.filename or "file" + (mimetypes.guess_extension(mime) or "")
    return {"type": "file", "file": {"file_data": f"data:{mime};base64,{p.data}", "filename": name}}


def _content(m: c.Message) -> str | list[dict[str, Any]] | None:
    if all(isinstance(p, (c.TextPart, c.ReasoningPart)) for p in m.content):
        return m.text() if m.content or not m.tool_calls else None
    parts: list[dict[str, Any]] = []
    for p in m.content:
        if isinstance(p, c.TextPart):
            parts.append({"type": "text", "text": p.text})
        elif isinstance(p, c.MediaPart):
            parts.append(_media(p))
    return parts


def _messages(req: c.ChatRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    tool_media: list[c.Part] = []  # images of tool results: tool messages take only text
    for m in req.messages:
        if m.role != "tool" and tool_media:
            messages.append({"role": "user", "content": _content(c.Message("user", tool_media))})
            tool_media = []
        if m.role == "tool" and any(isinstance(p, c.MediaPart) for p in m.content):
            # OpenAI's tool messages take text parts only: the images follow in a user message.
            tool_media += [c.TextPart(f"(attachments of tool result {m.tool_call_id})")]
            tool_media += [p for p in m.content if isinstance(p, c.MediaPart)]
            text = [p for p in m.content if isinstance(p, c.TextPart)]
            m = c.Message("tool", text or [c.TextPart("(see the attachments that follow)")],
                          tool_call_id=m.tool_call_id, name=m.name)
        out: dict[str, Any] = {"role": m.role, "content": _content(m)}
        if m.tool_calls:
            out["tool_calls"] = [{"id": t.id, "type": "function",
                                  "function": {"name": t.name, "arguments": t.arguments}} for t in m.tool_calls]
        if m.tool_call_id:
            out["tool_call_id"] = m.tool_call_id
        if m.name and m.role == "user":
            out["name"] = m.name
        messages.append(out)
    if tool_media:
        messages.append({"role": "user", "content": _content(c.Message("user", tool_media))})
    return messages


def build_request(req: c.ChatRequest, model: str, stream: bool, *, limit: str = "max_tokens") -> dict[str, Any]:
    """`limit` is the field for the output-token limit (see limit_field)."""
    body: dict[str, Any] = {"model": model, "messages": _messages(req), "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}  # we always want usage for accounting
    for key in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "parallel_tool_calls",
                "reasoning_effort", "user"):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    if req.max_tokens is not None:
        body[limit] = req.max_tokens
    if req.stop:
        body["stop"] = req.stop
    if req.n > 1:
        body["n"] = req.n
    if req.tools:
        body["tools"] = [{"type": "function", "function": {k: v for k, v in (
            ("name", t.name), ("description", t.description), ("parameters", t.parameters), ("strict", t.strict))
            if v is not None}} for t in req.tools]
    tc = req.tool_choice
    if tc is not None:
        if tc.names and tc.mode == "required" and len(tc.names) == 1:
            body["tool_choice"] = {"type": "function", "function": {"name": tc.names[0]}}
        elif tc.names:
            body["tool_choice"] = {"type": "allowed_tools", "allowed_tools": {
                "mode": tc.mode, "tools": [{"type": "function", "function": {"name": n}} for n in tc.names]}}
        else:
            body["tool_choice"] = tc.mode
    rf = req.response_format
    if rf is not None:
        if rf.type == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": rf.name or "response", "schema": rf.schema, **({"strict": rf.strict} if rf.strict else {})}}
        else:
            body["response_format"] = {"type": rf.type}
    return body


BYTES_PER_TOKEN = 4  # OpenAI's rule of thumb for English text and JSON


def estimate_tokens(req: c.ChatRequest, model: str) -> int:
    """What the request's messages and tools would cost, estimated: OpenAI-compatible servers have
    no token-counting endpoint, so one token per 4 bytes of what the server would be sent."""
    body = build_request(req, model, False)
    counted = jsonfast.dumps({k: body[k] for k in ("messages", "tools") if k in body})
    return max(1, -(-len(counted) // BYTES_PER_TOKEN))


def usage_from(u: dict[str, Any] | None) -> c.Usage:
    if not u:
        return c.Usage()
    return c.Usage(
        input_tokens=u.get("prompt_tokens", 0) or 0,
        output_tokens=u.get("completion_tokens", 0) or 0,
        reasoning_tokens=((u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0),
        cached_tokens=((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
    )


_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
           "content_filter": "content_filter"}


def completion_from(data: dict[str, Any]) -> c.Completion:
    choices = []
    for pos, ch in enumerate(data.get("choices") or []):
        msg = ch.get("message") or {}
        calls = [c.ToolCall(t.get("id", ""), (t.get("function") or {}).get("name", ""),
                            (t.get("function") or {}).get("arguments", "") or "{}")
                 for t in msg.get("tool_calls") or []]
        reason = _FINISH.get(ch.get("finish_reason") or "stop", "stop")
        if calls:
            reason = "tool_calls"
        choices.append(c.Choice(index=ch.get("index", pos), text=msg.get("content") or "",
                                reasoning=msg.get("reasoning_content") or msg.get("reasoning") or "",
                                tool_calls=calls, finish_reason=reason))  # type: ignore[arg-type]
    return c.Completion(choices, usage_from(data.get("usage")), data.get("model"))


class OpenAIStreamDecoder:
    """chat.completion.chunk payloads -> canonical events; `[DONE]` marks a clean end."""

    def __init__(self) -> None:
        self.done = False
        self._usage: dict[str, Any] | None = None
        self._calls: dict[tuple[int, int], bool] = {}
        self._finished: set[int] = set()

    def feed(self, payload: str) -> list[c.StreamEvent]:
        if payload.strip() == "[DONE]":
            self.done = True
            return []
        if payload.lstrip().startswith('{"error"'):
            raise error_from(502, payload.encode(), {})
        try:
            data = jsonfast.loads(payload)
        except ValueError:
            raise UpstreamError(502, "Upstream sent an SSE event that is not JSON.") from None
        events: list[c.StreamEvent] = []
        if data.get("usage"):
            self._usage = data["usage"]
        for pos, ch in enumerate(data.get("choices") or []):
            idx = ch.get("index", pos)
            delta = ch.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                events.append(c.ReasoningDelta(idx, reasoning))
            if delta.get("content"):
                events.append(c.TextDelta(idx, delta["content"]))
            for k, tc in enumerate(delta.get("tool_calls") or []):
                call_index = tc.get("index", k)
                fn = tc.get("function") or {}
                first = (idx, call_index) not in self._calls
                self._calls[(idx, call_index)] = True
                events.append(c.ToolCallDelta(idx, call_index, fn.get("arguments") or "",
                                              id=tc.get("id") if first else None,
                                              name=fn.get("name") if first else None))
            if ch.get("finish_reason") and idx not in self._finished:
                self._finished.add(idx)
                reason = _FINISH.get(ch["finish_reason"], "stop")
                if any(key[0] == idx for key in self._calls):
                    reason = "tool_calls"
                events.append(c.Finish(idx, reason))  # type: ignore[arg-type]
        return events

    def finish(self) -> list[c.StreamEvent]:
        if not self.done:
            raise UpstreamError(502, "Upstream stream ended before [DONE].")
        return [c.UsageUpdate(usage_from(self._usage))]
