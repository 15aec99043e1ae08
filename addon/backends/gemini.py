"""Canonical <-> Gemini `generateContent` (also the inner request of Cloud Code v1internal).

Pure functions plus one stream state machine (GeminiStreamDecoder): Gemini SSE events in,
canonical stream events out. Gemini's wire rules that shape this file: roles are only
`user`/`model` (system text goes to `systemInstruction`); function results are `functionResponse`
parts in a `user` turn, as many as the calls of the turn before, paired by position; streamed
events are complete GenerateContentResponse objects holding only the new parts, with cumulative
`usageMetadata` (the last one is the total); `finishReason` is STOP even after function calls;
`candidatesTokenCount` excludes `thoughtsTokenCount`. What each model accepts (thinking controls,
penalties, several candidates, tools with JSON mode) is in gemini_models.py; function names
Gemini refuses are renamed and mapped back by gemini_names.py; schemas go up as JSON Schema
(schema.py). `prepare` returns the body and the `Reply` that decoding its answer needs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import canonical as c
from ..protocol.errors import UpstreamError, bad_request
from ..protocol.ids import new_id
from . import parse_duration, retry_after_header
from .gemini_models import ModelRules, nearest_level, rules_for
from .gemini_names import ToolNames
from .schema import response_schema, tool_parameters

log = logging.getLogger(__name__)

# ---- thought signatures ride inside the OpenAI tool-call id ---------------------------------
# Gemini 3 requires a function call's thoughtSignature to come back on that call in the next
# request. OpenAI clients echo tool-call ids verbatim, so the id carries it (stateless, survives
# restarts and multiple gateway instances). URL-safe base64 keeps the id a plain token.

_SIG_MARK = ".sig."


def tool_call_id(signature: str | None) -> str:
    base = new_id("call_", 8)
    if not signature:
        return base
    return base + _SIG_MARK + base64.urlsafe_b64encode(signature.encode()).decode().rstrip("=")


def signature_from_id(call_id: str) -> str | None:
    _, mark, encoded = call_id.partition(_SIG_MARK)
    if not mark:
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


# ---- request -------------------------------------------------------------------------------


def _media_part(p: c.MediaPart) -> dict[str, Any]:
    if p.data is not None:
        return {"inlineData": {"mimeType": p.mime_type or "application/octet-stream", "data": p.data}}
    # Gemini wants a mimeType with fileData; the URL's extension is the best hint there is.
    mime = p.mime_type or mimetypes.guess_type(p.url or "")[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": p.url}}


def _function_response(content: str) -> dict[str, Any]:
    """Gemini wants an object; tool results are usually text or JSON text."""
    try:
        value = json.loads(content)
    except ValueError:
        return {"content": content}
    return value if isinstance(value, dict) else {"content": value}


_MAJOR = re.compile(r"^gemini-(\d+)")


def gemini_major(model: str) -> int:
    """2 for gemini-2.5-pro, 3 for gemini-3-pro-preview / gemini-3.1-flash; 0 when unknown."""
    m = _MAJOR.match(model)
    return int(m.group(1)) if m else 0


def _tool_result(m: c.Message, name: str, multimodal: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool message -> its functionResponse part, plus media parts that must travel separately.

    Gemini 3 takes a result's images inside `functionResponse.parts`; older models refuse that
    field ("`function_response.parts` is not supported for this model", gemini-cli#19436) and
    may refuse extra parts beside the function responses (gemini-cli#17068), so there the images
    follow in a user turn of their own."""
    media = [_media_part(p) for p in m.content if isinstance(p, c.MediaPart)]
    text = m.text()
    if media and not text:
        text = "(the result is the attached image)" if multimodal else "(the result's images follow)"
    fr: dict[str, Any] = {"name": name, "response": _function_response(text)}
    if media and multimodal:
        fr["parts"] = media
        media = []
    return {"functionResponse": fr}, media


def _args(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {"value": value}


def _contents(messages: list[c.Message], names: ToolNames, model: str = "") -> tuple[list[dict[str, Any]], list[str]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    call_order: dict[str, int] = {}  # tool-call id -> position among its turn's calls
    multimodal = gemini_major(model) >= 3
    tool_media: list[dict[str, Any]] = []  # images of tool results, after the turn's functionResponses

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:  # Gemini wants user/model turns
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for m in messages:
        if m.role != "tool" and tool_media:
            contents.append({"role": "user", "parts": tool_media})
            tool_media = []
        if m.role == "system":
            text = m.text()
            if text:
                system.append(text)
            continue
        if m.role == "tool":
            name = call_names.get(m.tool_call_id or "", names.up(m.name or "function"))
            part, media = _tool_result(m, name, multimodal)
            add("user", [part])
            _order_responses(contents[-1]["parts"], call_order, m.tool_call_id, part)
            if media:
                tool_media += [{"text": f"(images returned by {name})"}, *media]
            continue
        parts: list[dict[str, Any]] = []
        for p in m.content:
            if isinstance(p, c.TextPart):
                if p.text:
                    parts.append({"text": p.text})
            elif isinstance(p, c.MediaPart):
                parts.append(_media_part(p))
            elif isinstance(p, c.ReasoningPart) and p.signature:
                # Earlier thinking only means something to Gemini with its signature.
                parts.append({"text": p.text, "thought": True, "thoughtSignature": p.signature})
        for k, tc in enumerate(m.tool_calls):
            call_names[tc.id] = names.up(tc.name)
            call_order[tc.id] = k
            part: dict[str, Any] = {"functionCall": {"name": names.up(tc.name), "args": _args(tc.arguments)}}
            sig = signature_from_id(tc.id)
            if sig:
                part["thoughtSignature"] = sig
            parts.append(part)
        add("model" if m.role == "assistant" else "user", parts)
    if tool_media:
        contents.append({"role": "user", "parts": tool_media})
    return contents, system


def _order_responses(parts: list[dict[str, Any]], order: dict[str, int], call_id: str | None,
                     added: dict[str, Any]) -> None:
    """Keep a turn's functionResponse parts in the order of the calls they answer.

    Gemini pairs responses with calls by position; clients may send tool results in completion
    order (two calls to one function would then swap answers)."""
    added["_order"] = order.get(call_id or "", len(order))
    run = [p for p in parts if "functionResponse" in p]
    if len(run) == len(parts) and all("_order" in p for p in parts):
        parts.sort(key=lambda p: p["_order"])


def _strip_order(contents: list[dict[str, Any]]) -> None:
    for content in contents:
        for part in content["parts"]:
            part.pop("_order", None)


# ---- thinking and the output budget ----------------------------------------------------------
# Gemini counts thought tokens against maxOutputTokens (python-genai#2062 on Gemini 3; a 2.5-flash
# call with maxOutputTokens 50 ends MAX_TOKENS with no text, ha-llmvision#609), and 2.5 Flash,
# 2.5 Pro and every 3.x model think by default. The policy:
#   * the client asked for no reasoning (reasoning_effort "none", or no effort with a visible limit
#     of at most SMALL_ANSWER tokens, e.g. a 30-token title or legacy completions' default 16):
#     thinking off where the model allows it (budget 0), else its minimum (2.5 Pro budget 128,
#     the lowest thinkingLevel);
#   * otherwise the thinking the client asked for (or the model's default, bounded on 2.5 by an
#     explicit budget), and maxOutputTokens = the client's limit + that thinking's headroom, so the
#     answer can still reach the client's limit; visible text beyond the limit is then cut here
#     (finish_reason "length") from the upstream's own token counts.
# A thinkingLevel implied by the model mapping (e.g. gemini-3-pro-high) wins over reasoning_effort
# for the level; reasoning_effort (other than "none") still asks for the thoughts to be shown.

SMALL_ANSWER = 1024
_BUDGETS = {"none": 0, "minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}
_DEFAULT_BUDGET = 8192  # 2.5's dynamic thinking, bounded when a visible limit needs headroom
_EFFORT_LEVEL = {"minimal": "minimal", "low": "low", "medium": "medium", "high": "high", "xhigh": "high"}
_LEVEL_BUDGET = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}
_LEVEL_HEADROOM = {"minimal": 1024, "low": 4096, "medium": 12288, "high": 24576}  # thought tokens to allow for


@dataclass(slots=True)
class OutputPlan:
    thinking: dict[str, Any] | None = None
    max_output_tokens: int | None = None
    visible_limit: int | None = None  # cut visible text to this (headroom was added for thoughts)


def _legacy_thinking(req: c.ChatRequest, model: str) -> dict[str, Any] | None:
    """A model the table does not know: the effort mapped as for 2.5 (budgets) or 3 (levels)."""
    effort = req.reasoning_effort
    if effort is None:
        return None
    if model.startswith("gemini-3"):
        if effort == "none":
            return {"thinkingLevel": "low"}
        return {"thinkingLevel": "low" if effort in ("minimal", "low") else "high", "includeThoughts": True}
    budget = _BUDGETS.get(effort, 8192)
    return {"thinkingBudget": budget, "includeThoughts": True} if budget else {"thinkingBudget": 0}


def output_plan(req: c.ChatRequest, model: str, rules: ModelRules | None = None) -> OutputPlan:
    rules = rules or rules_for(model)
    effort, level_hint, limit = req.reasoning_effort, req.thinking_level, req.max_tokens
    if not rules.known:
        return OutputPlan(_legacy_thinking(req, model), limit)
    show = effort not in (None, "none")
    quiet = effort == "none" or (effort is None and level_hint is None and limit is not None
                                 and limit <= SMALL_ANSWER)
    thinking: dict[str, Any] | None = None
    headroom = 0
    if rules.levels:
        level = (nearest_level(rules, level_hint) if level_hint else rules.levels[0] if quiet
                 else nearest_level(rules, _EFFORT_LEVEL[effort]) if effort else None)
        if level:
            thinking = {"thinkingLevel": level}
        if show:
            thinking = {**(thinking or {}), "includeThoughts": True}
        headroom = _LEVEL_HEADROOM.get(level or rules.default_level or "high", _LEVEL_HEADROOM["high"])
    elif rules.budget is not None:
        low, high = rules.budget
        budget: int | None = None
        if level_hint:
            budget = _LEVEL_BUDGET.get(level_hint, _DEFAULT_BUDGET)
        elif quiet:
            budget = 0 if rules.budget_zero else low
            if effort is None and not rules.thinks_by_default:
                budget = None  # already off: nothing to say
        elif effort:
            budget = _BUDGETS.get(effort, _DEFAULT_BUDGET)
        elif limit is not None and rules.thinks_by_default:
            budget = _DEFAULT_BUDGET
        if budget is not None:
            budget = 0 if budget == 0 and rules.budget_zero else min(max(budget, low), high)
            thinking = {"thinkingBudget": budget}
            if show and budget:
                thinking["includeThoughts"] = True
        headroom = budget or 0
    if limit is None:
        return OutputPlan(thinking)
    if not headroom:
        return OutputPlan(thinking, limit)
    return OutputPlan(thinking, min(limit + headroom, rules.output_limit), limit)


# ---- the request ------------------------------------------------------------------------------

@dataclass(slots=True)
class Reply:
    """What decoding an answer needs from the request that asked for it."""

    names: ToolNames = field(default_factory=lambda: ToolNames(()))
    visible_limit: int | None = None


_JSON_BY_PROMPT = ("Answer with one JSON value only: no prose before or after it, no code fences.")


def prepare(req: c.ChatRequest, model: str, *,
            safety: Sequence[Mapping[str, str]] | None = None) -> tuple[dict[str, Any], Reply]:
    """The GenerateContentRequest body for `model` (the mapped upstream name), and what decoding
    its answer needs; `safety` is the account's (or the gateway's) safetySettings list."""
    rules = rules_for(model)
    names = ToolNames.of(req)
    contents, system = _contents(req.messages, names, model)
    _strip_order(contents)
    if not contents:
        if not system:
            raise bad_request("The request has no message content to send.", "messages")
        # System-only conversations are legal for OpenAI; Gemini needs a user turn.
        contents, system = [{"role": "user", "parts": [{"text": "\n\n".join(system)}]}], []
    body: dict[str, Any] = {"contents": contents}

    gen: dict[str, Any] = {}
    penalties = (("presencePenalty", req.presence_penalty), ("frequencyPenalty", req.frequency_penalty))
    for key, value in (("temperature", req.temperature), ("topP", req.top_p), ("seed", req.seed),
                       *(penalties if rules.penalties else ())):
        if value is not None:
            gen[key] = value
    plan = output_plan(req, model, rules)
    if plan.max_output_tokens is not None:
        gen["maxOutputTokens"] = plan.max_output_tokens
    if req.stop:
        gen["stopSequences"] = req.stop
    if req.n > 1:
        gen["candidateCount"] = req.n
    rf = req.response_format
    if rf is not None:
        schema = response_schema(rf.schema) if rf.schema else None
        tool_choice_none = req.tool_choice is not None and req.tool_choice.mode == "none"
        if req.tools and not rules.json_with_tools and not tool_choice_none:
            # Before Gemini 3, "Function calling with a response mime type: 'application/json' is
            # unsupported": the JSON instruction goes into the system prompt instead.
            system.append(_JSON_BY_PROMPT + (f" It must match this JSON Schema: {json.dumps(schema)}"
                                             if schema else ""))
        else:
            gen["responseMimeType"] = "application/json"
            if schema:
                gen["responseJsonSchema"] = schema
    if plan.thinking:
        gen["thinkingConfig"] = plan.thinking
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if gen:
        body["generationConfig"] = gen
    if safety:
        body["safetySettings"] = [dict(s) for s in safety]

    search = req.web_search and _search_allowed(req, model)
    if req.tools:
        decls = []
        for t in req.tools:
            decl: dict[str, Any] = {"name": names.up(t.name)}
            if t.description:
                decl["description"] = t.description
            params = tool_parameters(t.parameters, t.name) if t.parameters else None
            if params:
                decl["parametersJsonSchema"] = params
            decls.append(decl)
        body["tools"] = [{"functionDeclarations": decls}]
        tc = req.tool_choice
        if tc is not None:
            mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}[tc.mode]
            cfg: dict[str, Any] = {"mode": mode}
            if tc.names:
                cfg["allowedFunctionNames"] = [names.up(n) for n in tc.names]
                if tc.mode == "auto":  # "allowed_tools" in auto mode: restrict, let the model choose
                    cfg["mode"] = "VALIDATED"
            body["toolConfig"] = {"functionCallingConfig": cfg}
    if search:
        body.setdefault("tools", []).append({"googleSearch": {}})
        if req.tools:
            # Gemini 3 "tool combination": built-in and function tools together need this flag
            # (https://ai.google.dev/gemini-api/docs/tool-combination).
            body.setdefault("toolConfig", {})["includeServerSideToolInvocations"] = True
    return body, Reply(names, plan.visible_limit)


def build_request(req: c.ChatRequest, model: str, *,
                  safety: Sequence[Mapping[str, str]] | None = None) -> dict[str, Any]:
    """The GenerateContentRequest body for `model` (the mapped upstream name)."""
    return prepare(req, model, safety=safety)[0]


_search_dropped: set[str] = set()  # models already logged about, so a busy client does not flood the log


def _search_allowed(req: c.ChatRequest, model: str) -> bool:
    """Google Search grounding goes with function tools only on Gemini 3 and later: 2.x answers
    400 "Tool use with function calling is unsupported" (googleapis/go-genai#323), so there the
    search is dropped (with one log line per model) rather than failing a request whose client
    (e.g. Codex) offers a search tool next to its function tools every turn."""
    if not req.tools or gemini_major(model) >= 3:
        return True
    if model not in _search_dropped:
        _search_dropped.add(model)
        log.warning("web search dropped for %s: Gemini before 3 cannot combine Google Search with function "
                    "tools; requests that offer both are sent without the search", model)
    return False


# ---- response ------------------------------------------------------------------------------

_FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
}


def finish_reason(raw: str | None, had_tool_calls: bool) -> c.FinishReason:
    # Gemini says STOP even when the turn ends in function calls; OpenAI clients key on tool_calls.
    if had_tool_calls:
        return "tool_calls"
    return _FINISH.get(raw or "STOP", "stop")  # type: ignore[return-value]


def usage_from(meta: dict[str, Any] | None) -> c.Usage:
    if not meta:
        return c.Usage()
    thoughts = meta.get("thoughtsTokenCount", 0) or 0
    return c.Usage(
        input_tokens=(meta.get("promptTokenCount", 0) or 0) + (meta.get("toolUsePromptTokenCount", 0) or 0),
        output_tokens=(meta.get("candidatesTokenCount", 0) or 0) + thoughts,
        reasoning_tokens=thoughts,
        cached_tokens=meta.get("cachedContentTokenCount", 0) or 0,
    )


# ---- grounding (Google Search) -------------------------------------------------------------


def _char_span(encoded: bytes, text: str, segment: dict[str, Any], base: int) -> tuple[int, int] | None:
    """A groundingSupport segment -> character offsets into `text`.

    Google measures segments in UTF-8 bytes from the start of their part (Segment.startIndex /
    endIndex in the API reference; startIndex 0 is left out of the JSON); OpenAI's url_citation
    indexes characters. When the bytes do not land on the segment's own `text` (e.g. parts
    counted differently in a stream), the text itself is looked up."""
    seg_text = segment.get("text") if isinstance(segment.get("text"), str) else None
    start, end = segment.get("startIndex") or 0, segment.get("endIndex")
    if isinstance(start, int) and isinstance(end, int) and 0 <= base + start < base + end <= len(encoded):
        s = len(encoded[:base + start].decode("utf-8", "ignore"))
        e = s + len(encoded[base + start:base + end].decode("utf-8", "ignore"))
        if seg_text is None or text[s:e] == seg_text:
            return s, e
    if seg_text:
        found = text.find(seg_text)
        if found >= 0:
            return found, found + len(seg_text)
    return None


def _title(uri: str, title: Any) -> str:
    if isinstance(title, str) and title:
        return title
    return uri.split("://", 1)[-1].split("/", 1)[0]


def grounding_from(meta: Any, text: str, part_bases: Mapping[int, int] | None = None) -> c.Grounding | None:
    """A candidate's groundingMetadata -> canonical Grounding; `text` is the candidate's visible
    text, `part_bases` the byte offset where each part (by index) starts in it."""
    if not isinstance(meta, dict):
        return None
    chunks: list[tuple[str, str] | None] = []
    for chunk in meta.get("groundingChunks") or []:
        web = chunk.get("web") if isinstance(chunk, dict) else None
        uri = web.get("uri") if isinstance(web, dict) else None
        chunks.append((uri, _title(uri, web.get("title"))) if isinstance(uri, str) and uri else None)
    queries = [q for q in meta.get("webSearchQueries") or [] if isinstance(q, str) and q]
    encoded = text.encode()
    citations: list[c.Citation] = []
    for support in meta.get("groundingSupports") or []:
        if not isinstance(support, dict) or not isinstance(support.get("segment"), dict):
            continue
        segment = support["segment"]
        base = (part_bases or {}).get(segment.get("partIndex") or 0, 0)
        span = _char_span(encoded, text, segment, base)
        if span is None:
            continue
        for i in dict.fromkeys(support.get("groundingChunkIndices") or []):
            source = chunks[i] if isinstance(i, int) and 0 <= i < len(chunks) else None
            if source is not None:
                citations.append(c.Citation(span[0], span[1], source[0], source[1]))
    sources = list(dict.fromkeys(s for s in chunks if s is not None))
    if not (queries or sources or citations):
        return None
    return c.Grounding(queries, sources, citations)


def _call_from_part(part: dict[str, Any], reply: Reply) -> c.ToolCall:
    fc = part["functionCall"]
    return c.ToolCall(tool_call_id(part.get("thoughtSignature")), reply.names.down(fc.get("name", "")),
                      json.dumps(fc.get("args") or {}, ensure_ascii=False))


# ---- the client's visible limit, when thinking headroom was added (see output_plan) ----------
# Gemini reports candidatesTokenCount (all candidates, thoughts excluded), not a per-character
# count, so text is cut at the client's limit by the characters-per-token ratio of the answer.

def _cut_text(text: str, chars: int) -> str:
    if chars >= len(text):
        return text
    if chars <= 0:
        return ""
    space = text.rfind(" ", 0, chars + 1)
    return text[:space].rstrip() if space > chars // 2 else text[:chars]


def _answer_chars(parts: list[dict[str, Any]]) -> int:
    """Characters of what candidatesTokenCount counts: visible text and function calls."""
    n = 0
    for part in parts:
        if "functionCall" in part:
            n += len(json.dumps(part["functionCall"].get("args") or {}))
        elif not part.get("thought") and isinstance(part.get("text"), str):
            n += len(part["text"])
    return n


def _enforce_limit(choices: list[c.Choice], meta: dict[str, Any] | None, limit: int) -> None:
    tokens = (meta or {}).get("candidatesTokenCount") or 0
    chars = sum(len(ch.text) + sum(len(tc.arguments) for tc in ch.tool_calls) for ch in choices)
    if not tokens or not chars:
        return
    per_token = chars / tokens
    for ch in choices:
        if ch.text and not ch.tool_calls and len(ch.text) / per_token > limit + 0.5:
            ch.text = _cut_text(ch.text, int(limit * per_token))
            ch.finish_reason = "length"
            if ch.grounding is not None:  # citations of the text that was cut go with it
                ch.grounding.citations = [x for x in ch.grounding.citations if x.end <= len(ch.text)]


def completion_from(data: dict[str, Any], n: int = 1, reply: Reply | None = None) -> c.Completion:
    reply = reply or Reply()
    choices: list[c.Choice] = []
    for pos, cand in enumerate(data.get("candidates") or []):
        ch = c.Choice(index=cand.get("index", pos))
        bases: dict[int, int] = {}  # part index -> byte offset of that part in ch.text
        for k, part in enumerate((cand.get("content") or {}).get("parts") or []):
            if "functionCall" in part:
                ch.tool_calls.append(_call_from_part(part, reply))
            elif part.get("thought"):
                ch.reasoning += part.get("text", "")
                ch.reasoning_signature = part.get("thoughtSignature") or ch.reasoning_signature
            elif "text" in part:
                bases[k] = len(ch.text.encode())
                ch.text += part["text"]
        ch.finish_reason = finish_reason(cand.get("finishReason"), bool(ch.tool_calls))
        ch.grounding = grounding_from(cand.get("groundingMetadata"), ch.text, bases)
        choices.append(ch)
    if not choices:  # prompt blocked: promptFeedback.blockReason, no candidates
        choices = [c.Choice(index=i, finish_reason="content_filter") for i in range(n)]
    elif reply.visible_limit is not None:
        _enforce_limit(choices, data.get("usageMetadata"), reply.visible_limit)
    return c.Completion(choices, usage_from(data.get("usageMetadata")), data.get("modelVersion"))


def unwrap(data: Any) -> Any:
    """Cloud Code wraps each GenerateContentResponse as {"response": ...}; the Gemini API does not."""
    if isinstance(data, dict) and isinstance(data.get("response"), dict):
        return data["response"]
    return data


def error_from(status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    """Gemini / Cloud Code error bodies: {"error": {...}} or a JSON array of them; OAuth token
    endpoints answer {"error": "invalid_grant", "error_description": ...}."""
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
                # google.rpc.Help links (Cloud Code's VALIDATION_REQUIRED names the page to open)
                for link in detail.get("links") or []:
                    if isinstance(link, dict) and isinstance(link.get("url"), str) and link["url"] not in message:
                        message += f" ({link['url']})"
    elif isinstance(data, dict) and isinstance(data.get("error"), str):  # OAuth token endpoint
        reason = data["error"]
        message = data.get("error_description") or reason
    if delay is None:
        delay = retry_after_header(headers)
    return UpstreamError(status, message, retry_after=delay, reason=reason)


def completion_from_body(body: bytes, n: int, reply: Reply | None = None) -> c.Completion:
    """A whole (possibly Cloud Code-wrapped) generateContent answer."""
    try:
        return completion_from(unwrap(json.loads(body)), n, reply)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UpstreamError(502, "Upstream returned a body that is not a GenerateContentResponse.") from None


class GeminiStreamDecoder:
    """Gemini SSE payloads (each a partial GenerateContentResponse) -> canonical stream events."""

    def __init__(self, n: int = 1, reply: Reply | None = None) -> None:
        self._n = n
        self._reply = reply or Reply()
        self._calls: dict[int, int] = {}  # candidate -> tool calls emitted so far
        self._finished: set[int] = set()
        self._usage: dict[str, Any] | None = None
        self._blocked = False
        self._texts: dict[int, list[str]] = {}  # candidate -> visible text so far (grounding offsets)
        self._grounding: dict[int, Any] = {}  # candidate -> latest groundingMetadata not yet sent
        self._chars: dict[int, int] = {}  # candidate -> visible characters so far (with a visible limit)
        self._chars_total = 0

    def feed(self, payload: str) -> list[c.StreamEvent]:
        try:
            data = json.loads(payload)
        except ValueError:
            raise UpstreamError(502, "Upstream sent an SSE event that is not JSON.") from None
        if isinstance(data, list) or (isinstance(data, dict) and "error" in data):
            raise error_from(500, payload.encode(), {})
        return self.feed_response(unwrap(data))

    def feed_response(self, data: dict[str, Any]) -> list[c.StreamEvent]:
        events: list[c.StreamEvent] = []
        if data.get("usageMetadata"):
            self._usage = data["usageMetadata"]  # cumulative: the last one is the total
        candidates = data.get("candidates") or []
        if not candidates and (data.get("promptFeedback") or {}).get("blockReason"):
            self._blocked = True
        limit = self._reply.visible_limit
        if limit is not None:
            self._chars_total += sum(_answer_chars((cand.get("content") or {}).get("parts") or [])
                                     for cand in candidates)
        for pos, cand in enumerate(candidates):
            idx = cand.get("index", pos)
            for part in (cand.get("content") or {}).get("parts") or []:
                if idx in self._finished:
                    break  # cut at the client's limit: nothing more for this choice
                if "functionCall" in part:
                    call = _call_from_part(part, self._reply)
                    k = self._calls.get(idx, 0)
                    self._calls[idx] = k + 1
                    # Header first, then the arguments: clients see a real incremental call.
                    events.append(c.ToolCallDelta(idx, k, "", id=call.id, name=call.name))
                    events.append(c.ToolCallDelta(idx, k, call.arguments))
                elif part.get("thought"):
                    if part.get("text") or part.get("thoughtSignature"):
                        events.append(c.ReasoningDelta(idx, part.get("text", ""), part.get("thoughtSignature")))
                elif part.get("text"):
                    text, over = part["text"], False
                    if limit is not None:
                        text, over = self._within_limit(idx, text, limit)
                    if text:
                        self._texts.setdefault(idx, []).append(text)
                        events.append(c.TextDelta(idx, text))
                    if over:
                        self._finished.add(idx)
                        events.append(c.Finish(idx, "length"))
            if cand.get("groundingMetadata"):
                # Usually on the last event; sent just before the finish, when all text is known.
                self._grounding[idx] = cand["groundingMetadata"]
            if (cand.get("finishReason") or idx in self._finished) and idx in self._grounding:
                events += self._grounding_event(idx)
            if cand.get("finishReason") and idx not in self._finished:
                self._finished.add(idx)
                events.append(c.Finish(idx, finish_reason(cand["finishReason"], self._calls.get(idx, 0) > 0)))
        return events

    def _grounding_event(self, idx: int) -> list[c.StreamEvent]:
        grounding = grounding_from(self._grounding.pop(idx), "".join(self._texts.get(idx, [])))
        return [c.GroundingUpdate(idx, grounding)] if grounding else []

    def _within_limit(self, idx: int, text: str, limit: int) -> tuple[str, bool]:
        """The part of `text` within the client's visible limit, and whether the limit was hit."""
        tokens = (self._usage or {}).get("candidatesTokenCount") or 0
        have = self._chars.get(idx, 0)
        if tokens and self._chars_total:
            per_token = self._chars_total / tokens
            if (have + len(text)) / per_token > limit + 0.5:
                text = _cut_text(text, int(limit * per_token) - have)
                self._chars[idx] = have + len(text)
                return text, True
        self._chars[idx] = have + len(text)
        return text, False

    @property
    def complete(self) -> bool:
        """True once every candidate finished (or the prompt was blocked): a clean end."""
        return self._blocked or len(self._finished) >= self._n

    def finish(self) -> list[c.StreamEvent]:
        if not self.complete:
            raise UpstreamError(502, "Upstream stream ended before the answer was complete.")
        events: list[c.StreamEvent] = []
        for idx in list(self._grounding):
            events += self._grounding_event(idx)
        if self._blocked:
            events += [c.Finish(i, "content_filter") for i in range(self._n) if i not in self._finished]
        events.append(c.UsageUpdate(usage_from(self._usage)))
        return events
