"""Canonical ChatRequest -> the GenerateContentRequest body (`prepare`), with the `Reply` that
decoding its answer needs."""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Mapping, Sequence
from typing import Any

from ...protocol import canonical as c
from ...protocol.errors import bad_request
from ..schema import response_schema, tool_parameters
from .models import gemini_major, rules_for
from .names import ToolNames
from .reply import Reply
from .signatures import Signer, fill_required, needs_signatures, signature_from_id
from .thinking import output_plan

log = logging.getLogger(__name__)

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


def _contents(messages: list[c.Message], names: ToolNames, model: str,
              signer: Signer) -> tuple[list[dict[str, Any]], list[str]]:
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
            elif isinstance(p, c.ReasoningPart):
                # Earlier thinking only means something to Gemini with its own signature. One of
                # unknown origin is left out: Gemini never requires it, and a Codex conversation
                # begun on OpenAI carries OpenAI's encrypted reasoning here.
                sig = signer.value(p.signature, unknown_origin=False)
                if sig:
                    parts.append({"text": p.text, "thought": True, "thoughtSignature": sig})
        for k, tc in enumerate(m.tool_calls):
            call_names[tc.id] = names.up(tc.name)
            call_order[tc.id] = k
            part: dict[str, Any] = {"functionCall": {"name": names.up(tc.name), "args": _args(tc.arguments)}}
            legacy = signature_from_id(tc.id) if tc.signature is None else None
            sig = signer.value(tc.signature or (c.Signature(legacy) if legacy else None))
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


_JSON_BY_PROMPT = ("Answer with one JSON value only: no prose before or after it, no code fences.")


def prepare(req: c.ChatRequest, model: str, origin: str | None = None, *,
            safety: Sequence[Mapping[str, str]] | None = None,
            trust_signatures: bool = True) -> tuple[dict[str, Any], Reply]:
    """The GenerateContentRequest body for `model` (the mapped upstream name), and what decoding
    its answer needs; `origin` is the credential it goes to (see `Signer`), `safety` the
    account's (or the gateway's) safetySettings list. `trust_signatures=False` sends no stored
    signature at all and the dummy on every model step's first call: the form Gemini accepts
    whatever the history."""
    rf = req.response_format
    rules = rules_for(model)
    names = ToolNames.of(req)
    contents, system = _contents(req.messages, names, model, Signer(model, origin, trust_signatures))
    _strip_order(contents)
    if needs_signatures(model):
        fill_required(contents, everywhere=not trust_signatures)
    if not contents:
        if not system:
            raise bad_request("The request has no message content to send.", "messages")
        # System-only conversations are legal for OpenAI; Gemini needs a user turn.
        contents, system = [{"role": "user", "parts": [{"text": "\n\n".join(system)}]}], []
    body: dict[str, Any] = {"contents": contents}

    gen: dict[str, Any] = {}
    penalties = (("presencePenalty", req.presence_penalty), ("frequencyPenalty", req.frequency_penalty))
    for key, value in (("temperature", req.temperature), ("topP", req.top_p), ("topK", req.top_k),
                       ("seed", req.seed), *(penalties if rules.penalties else ())):
        if value is not None:
            gen[key] = value
    plan = output_plan(req, model, rules)
    if plan.max_output_tokens is not None:
        gen["maxOutputTokens"] = plan.max_output_tokens
    if req.stop:
        gen["stopSequences"] = req.stop
    if req.n > 1:
        gen["candidateCount"] = req.n
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
    return body, Reply(names, plan.visible_limit, origin, model)


def build_request(req: c.ChatRequest, model: str, origin: str | None = None, *,
                  safety: Sequence[Mapping[str, str]] | None = None, trust_signatures: bool = True) -> dict[str, Any]:
    """The GenerateContentRequest body for `model` (the mapped upstream name)."""
    return prepare(req, model, origin, safety=safety, trust_signatures=trust_signatures)[0]


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
