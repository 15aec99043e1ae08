"""Chat Completions front end: request -> canonical, canonical -> response JSON and SSE."""

from __future__ import annotations

import re
import time
from typing import Any

from ..protocol import canonical as c
from ..protocol.errors import GatewayError, bad_request
from ..protocol.ids import new_id
from ..protocol.openai.chat import (
    AudioContent,
    ChatCompletionRequest,
    FileContent,
    ImageContent,
    NamedToolChoice,
    RefusalContent,
    TextContent,
    ToolCallIn,
    parse_chat_request,
)
from ..routes import Incoming, Outcome, Route, openai_error
from .base import Frontend
from .common import (
    DONE,
    check_json_args,
    check_stream_options,
    media_from_url,
    sse_data,
    stop_sequences,
    usage_json,
)

# ---- request -------------------------------------------------------------------------------


_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "ogg": "audio/ogg", "aac": "audio/aac"}


def _text_of(content: str | list | None) -> list[c.Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [c.TextPart(content)] if content else []
    out: list[c.Part] = []
    for part in content:
        if isinstance(part, TextContent):
            out.append(c.TextPart(part.text))
        elif isinstance(part, RefusalContent):
            out.append(c.TextPart(part.refusal))
    return out


def _user_parts(content: str | list, where: str) -> list[c.Part]:
    if isinstance(content, str):
        return [c.TextPart(content)]
    out: list[c.Part] = []
    for j, part in enumerate(content):
        param = f"{where}.content[{j}]"
        if isinstance(part, TextContent):
            out.append(c.TextPart(part.text))
        elif isinstance(part, ImageContent):
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            out.append(media_from_url(url, param + ".image_url.url"))
        elif isinstance(part, AudioContent):
            fmt = part.input_audio.format.lower()
            out.append(c.MediaPart(mime_type=_AUDIO_MIME.get(fmt, f"audio/{fmt}"), data=part.input_audio.data,
                                   kind="audio"))
        elif isinstance(part, FileContent):
            f = part.file
            if not f.file_data:
                raise bad_request("Uploaded file ids are not supported by this gateway; send file_data inline.",
                                  param + ".file")
            if f.file_data.startswith("data:"):
                out.append(media_from_url(f.file_data, param + ".file.file_data", "file", f.filename))
            else:  # bare base64: OpenAI takes PDFs there
                out.append(c.MediaPart("application/pdf", f.file_data, kind="file", filename=f.filename))
    return out


def _tool_parts(content: str | list, where: str) -> list[c.Part]:
    """A tool result: text, and images for tools that return them (screenshots, renders)."""
    if isinstance(content, str):
        return _text_of(content)
    out: list[c.Part] = []
    for j, part in enumerate(content):
        if isinstance(part, ImageContent):
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
            out.append(media_from_url(url, f"{where}.content[{j}].image_url.url"))
        else:
            out.append(c.TextPart(part.text))
    return out


def _client_signature(tc: ToolCallIn) -> c.Signature | None:
    """A signature the client sent itself (origin unknown); a stored one for the id wins."""
    sig = tc.thought_signature()
    return c.Signature(sig) if sig else None


def to_canonical(req: ChatCompletionRequest) -> c.ChatRequest:
    messages: list[c.Message] = []
    legacy_call_ids: list[str] = []  # deprecated function_call/function messages get synthetic ids
    for i, m in enumerate(req.messages):
        where = f"messages[{i}]"
        role = m.role
        if role in ("system", "developer"):
            messages.append(c.Message("system", _text_of(m.content)))
        elif role == "user":
            messages.append(c.Message("user", _user_parts(m.content, where), name=m.name))
        elif role == "assistant":
            parts = _text_of(m.content)
            if m.reasoning_content:
                parts.insert(0, c.ReasoningPart(m.reasoning_content))
            calls = [
                c.ToolCall(tc.id, tc.function.name,
                           check_json_args(tc.function.arguments, f"{where}.tool_calls[{k}].function.arguments"),
                           _client_signature(tc))
                for k, tc in enumerate(m.tool_calls or [])
            ]
            if m.function_call is not None:
                legacy_call_ids.append(new_id("call_", 8))
                calls.append(c.ToolCall(legacy_call_ids[-1], m.function_call.name,
                                        check_json_args(m.function_call.arguments, f"{where}.function_call")))
            messages.append(c.Message("assistant", parts, tool_calls=calls))
        elif role == "tool":
            messages.append(c.Message("tool", _tool_parts(m.content, where), tool_call_id=m.tool_call_id))
        else:  # deprecated "function" role answers the latest function_call
            call_id = legacy_call_ids[-1] if legacy_call_ids else new_id("call_", 8)
            messages.append(c.Message("tool", _text_of(m.content), tool_call_id=call_id, name=m.name))

    check_stream_options(req.stream, req.stream_options)

    tools = [c.Tool(t.function.name, t.function.description, t.function.parameters, t.function.strict)
             for t in req.tools or []]
    tools += [c.Tool(f.name, f.description, f.parameters, f.strict) for f in req.functions or []]

    stop = stop_sequences(req.stop)

    return c.ChatRequest(
        model=req.model,
        messages=messages,
        stream=bool(req.stream),
        include_usage=bool(req.stream and req.stream_options and req.stream_options.include_usage),
        temperature=req.temperature,
        top_p=req.top_p,
        # max_completion_tokens supersedes max_tokens (o-series and newer SDKs send only it)
        max_tokens=req.max_completion_tokens or req.max_tokens,
        stop=stop,
        n=req.n or 1,
        seed=req.seed,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        tools=tools,
        tool_choice=_tool_choice(req, tools),
        parallel_tool_calls=req.parallel_tool_calls,
        response_format=_response_format(req),
        reasoning_effort=req.reasoning_effort,
        user=req.user,
        web_search=req.web_search_options is not None,
    )


def _tool_choice(req: ChatCompletionRequest, tools: list[c.Tool]) -> c.ToolChoice | None:
    choice: Any = req.tool_choice if req.tool_choice is not None else req.function_call
    if choice is None:
        return None
    known = {t.name for t in tools}
    if isinstance(choice, str):
        if choice == "required" and not tools:
            raise bad_request("tool_choice 'required' needs at least one tool.", "tool_choice")
        return c.ToolChoice(choice)
    if isinstance(choice, NamedToolChoice):
        names = (choice.function.name,)
    elif hasattr(choice, "allowed_tools"):
        names = tuple(t.function.name for t in choice.allowed_tools.tools)
        if choice.allowed_tools.mode == "auto":
            unknown = [n for n in names if n not in known]
            if unknown:
                raise bad_request(f"tool_choice names unknown tool '{unknown[0]}'.", "tool_choice")
            return c.ToolChoice("auto", names)
    else:  # legacy {"name": ...}
        names = (choice.name,)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise bad_request(f"tool_choice names unknown tool '{unknown[0]}'.", "tool_choice")
    return c.ToolChoice("required", names)


def _response_format(req: ChatCompletionRequest) -> c.ResponseFormat | None:
    rf = req.response_format
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return c.ResponseFormat("json_object")
    if rf.json_schema is None or rf.json_schema.schema_ is None:
        raise bad_request("response_format json_schema needs 'json_schema.schema'.", "response_format.json_schema")
    return c.ResponseFormat("json_schema", rf.json_schema.schema_, rf.json_schema.name, rf.json_schema.strict)


def parse(body: Any) -> c.ChatRequest:
    return to_canonical(parse_chat_request(body))


def parse_with_context(body: Any) -> tuple[c.ChatRequest, bool]:
    """The canonical request and whether the client used the deprecated `functions` (and no
    `tools`): it then gets `function_call` answers back, as OpenAI does."""
    req = parse_chat_request(body)
    return to_canonical(req), bool(req.functions) and not req.tools


# ---- response ------------------------------------------------------------------------------


def _tool_call_json(tc: c.ToolCall) -> dict[str, Any]:
    return {"id": tc.id, "type": "function", "function": {"name": tc.name, "arguments": tc.arguments}}


def _finish(reason: c.FinishReason, legacy: bool) -> str:
    return "function_call" if legacy and reason == "tool_calls" else reason


def annotations(grounding: c.Grounding | None) -> list[dict[str, Any]]:
    """Cited spans as chat url_citation annotations (nested, character offsets into content)."""
    if grounding is None:
        return []
    return [{"type": "url_citation", "url_citation": {"start_index": x.start, "end_index": x.end, "url": x.url,
                                                      "title": x.title}} for x in grounding.citations]


def render(completion: c.Completion, req: c.ChatRequest, legacy: bool = False) -> dict[str, Any]:
    choices = []
    for ch in completion.choices:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": ch.text if (ch.text or not ch.tool_calls) else None,
            "refusal": None,
        }
        if ch.reasoning:
            message["reasoning_content"] = ch.reasoning
        if ch.tool_calls and legacy:
            # one call only in the legacy form; parallel calls beyond the first have no place
            message["function_call"] = {"name": ch.tool_calls[0].name, "arguments": ch.tool_calls[0].arguments}
        elif ch.tool_calls:
            message["tool_calls"] = [_tool_call_json(tc) for tc in ch.tool_calls]
        notes = annotations(ch.grounding)
        if notes:
            message["annotations"] = notes
        choices.append({"index": ch.index, "message": message, "logprobs": None,
                        "finish_reason": _finish(ch.finish_reason, legacy)})
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": choices,
        "usage": usage_json(completion.usage),
        "system_fingerprint": None,
    }


# ---- stream --------------------------------------------------------------------------------


class ChatStreamEncoder:
    """Canonical stream events -> `chat.completion.chunk` SSE, following what openai-python merges.

    One id/created/model for every chunk; `role` only in a choice's first delta; a tool call's
    id/type/name only in its first delta; usage chunk (choices: []) last when asked for.
    """

    def __init__(self, req: c.ChatRequest, legacy: bool = False) -> None:
        self._legacy = legacy  # deprecated `functions`: stream `function_call` deltas
        self._base = {
            "id": new_id("chatcmpl-"),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": req.model,
            "system_fingerprint": None,
        }
        self._include_usage = req.include_usage
        self._started: set[int] = set()
        self._calls_seen: dict[int, set[int]] = {}
        self._usage = c.Usage()

    def _chunk(self, choice: int, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if choice not in self._started:
            self._started.add(choice)
            delta = {"role": "assistant", **delta}
        chunk = {**self._base, "choices": [{"index": choice, "delta": delta, "logprobs": None,
                                            "finish_reason": finish}]}
        if self._include_usage:
            chunk["usage"] = None
        return sse_data(chunk)

    def feed(self, ev: c.StreamEvent) -> bytes:
        if isinstance(ev, c.TextDelta):
            return self._chunk(ev.choice, {"content": ev.text}) if ev.text else b""
        if isinstance(ev, c.ReasoningDelta):
            return self._chunk(ev.choice, {"reasoning_content": ev.text}) if ev.text else b""
        if isinstance(ev, c.ToolCallDelta) and self._legacy:
            if ev.call_index != 0:
                return b""  # the legacy form has room for one call
            first = ev.call_index not in self._calls_seen.setdefault(ev.choice, set())
            self._calls_seen[ev.choice].add(ev.call_index)
            fc = {"name": ev.name, "arguments": ev.arguments} if first else {"arguments": ev.arguments}
            return self._chunk(ev.choice, {"function_call": fc})
        if isinstance(ev, c.ToolCallDelta):
            seen = self._calls_seen.setdefault(ev.choice, set())
            call: dict[str, Any] = {"index": ev.call_index}
            if ev.call_index not in seen:
                seen.add(ev.call_index)
                call.update(id=ev.id, type="function", function={"name": ev.name, "arguments": ev.arguments})
            else:
                call["function"] = {"arguments": ev.arguments}
            return self._chunk(ev.choice, {"tool_calls": [call]})
        if isinstance(ev, c.Finish):
            return self._chunk(ev.choice, {}, _finish(ev.reason, self._legacy))
        if isinstance(ev, c.GroundingUpdate):
            notes = annotations(ev.grounding)
            return self._chunk(ev.choice, {"annotations": notes}) if notes else b""
        if isinstance(ev, c.UsageUpdate):
            self._usage = ev.usage
        return b""

    def start(self) -> bytes:
        return b""  # the first delta carries the role; nothing to announce before it

    def close(self) -> bytes:
        out = b""
        if self._include_usage:
            out += sse_data({**self._base, "choices": [], "usage": usage_json(self._usage)})
        return out + DONE

    def fail(self, err: GatewayError) -> bytes:
        return sse_data(err.payload())


class ChatFrontend(Frontend[bool]):
    """`POST /v1/chat/completions` (also `/chat/completions`); the context says whether the
    request used the legacy `functions` fields."""

    name = "chat"

    def routes(self) -> list[Route]:
        return [Route("POST", r"/(?:v1/)?chat/completions", "/v1/chat/completions")]

    def error(self, err: GatewayError) -> Outcome:
        return openai_error(err)

    async def parse(self, body: Any, match: re.Match[str], incoming: Incoming) -> tuple[c.ChatRequest, bool]:
        return parse_with_context(body)

    def render(self, completion: c.Completion, req: c.ChatRequest, ctx: bool) -> dict[str, Any]:
        return render(completion, req, legacy=ctx)

    def encoder(self, req: c.ChatRequest, ctx: bool) -> ChatStreamEncoder:
        return ChatStreamEncoder(req, legacy=ctx)
