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
from ..protocol import jsonfast
from ..protocol.errors import UnusableAnswer, UpstreamError, bad_request
from ..protocol.ids import new_id
from . import parse_duration, retry_after_header
from .gemini_models import ModelRules, nearest_level, rules_for
from .gemini_names import ToolNames
from .schema import response_schema, tool_parameters

log = logging.getLogger(__name__)

# ---- thought signatures ----------------------------------------------------------------------
# Gemini returns a `thoughtSignature` (opaque base64, often 1 KB+) on the first functionCall part
# of each model step, and on thought or last parts. Rules (ai.google.dev/gemini-api/docs/
# thought-signatures, "Validation"): in the current turn (everything after the last user content
# with text), the first functionCall of each model step must carry its signature on Gemini 3, and
# a signature issued to one credential is refused by another ("Corrupted thought signature.",
# google-gemini/gemini-cli#13467). The documented dummy `skip_thought_signature_validator` (same
# page, FAQ; also Vertex AI's docs) passes validation where the real one cannot be sent.
#
# Signatures stay out of the OpenAI ids (clients cap ids at 40 or 64 characters): the engine keeps
# them in a store keyed by id (addon/signature_store.py) with their origin, and hands them back on
# the canonical request; this module sends one only to the credential and model family that
# issued it, and the dummy where Gemini requires a signature and none can be sent.

DUMMY_SIGNATURE = "skip_thought_signature_validator"
_LEGACY_MARK = ".sig."  # before the store, ids were "call_<16 hex>.sig.<urlsafe base64 signature>"
_FAMILY_END = frozenset({"preview", "exp", "latest", "high", "low", "medium", "minimal"})


def tool_call_id() -> str:
    """OpenAI's shape: "call_" + 24 characters."""
    return new_id("call_", 12)


def signature_from_id(call_id: str) -> str | None:
    """The signature inside an id this gateway issued before the store existed (clients may be
    mid-conversation across the upgrade)."""
    _, mark, encoded = call_id.partition(_LEGACY_MARK)
    if not mark:
        return None
    try:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def needs_signatures(model: str) -> bool:
    """Gemini 3 and later validate the current turn's signatures; 2.5 only recommends them."""
    return gemini_major(model.lower().removeprefix("models/")) >= 3


def model_family(model: str) -> str:
    """The model a signature belongs to, without release tags: gemini-3-pro-preview ->
    gemini-3-pro, gemini-2.5-flash-lite-preview-09-2025 -> gemini-2.5-flash-lite. Signatures do not
    cross families (pro and flash encrypt differently; Antigravity-Manager PR #3342)."""
    tokens = model.lower().removeprefix("models/").split("-")
    kept = tokens[:2]
    for token in tokens[2:]:
        if token in _FAMILY_END or token.isdigit():
            break
        kept.append(token)
    return "-".join(kept)


class _Signer:
    """Which signature value (if any) goes back upstream, for one attempt on one credential."""

    def __init__(self, model: str, origin: str | None, trust: bool) -> None:
        self.family = model_family(model)
        self.origin = origin
        self.trust = trust

    def value(self, sig: c.Signature | None, *, unknown_origin: bool = True) -> str | None:
        """Only the issuer's own signature. One of unknown origin (an old id, Google's extra_content
        the client echoes) is sent when `unknown_origin` allows, and a refusal is retried with
        dummies (the provider does that); a known other origin never is."""
        if sig is None or not sig.value or not self.trust:
            return None
        if (sig.origin is None and not unknown_origin) or (sig.origin is not None and sig.origin != self.origin):
            return None
        if sig.model is not None and model_family(sig.model) != self.family:
            return None
        return sig.value


def _current_turn(contents: list[dict[str, Any]]) -> int:
    """Index of the last user content with text: where Google's "current turn" starts."""
    for i in range(len(contents) - 1, -1, -1):
        content = contents[i]
        if content["role"] == "user" and any(p.get("text") for p in content["parts"]):
            return i
    return 0


def _fill_required(contents: list[dict[str, Any]], everywhere: bool) -> None:
    """The dummy on each model step's first functionCall that has no signature: in the current turn
    (what Gemini 3 validates), or in every turn (`everywhere`, after a refusal)."""
    for content in contents[0 if everywhere else _current_turn(contents):]:
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is not None and not first.get("thoughtSignature"):
            first["thoughtSignature"] = DUMMY_SIGNATURE


def signature_refused(err: UpstreamError) -> bool:
    """Gemini refused the request's signatures ("Corrupted thought signature.", "... is missing a
    thought_signature ...", a base64 error on thought_signature) or answered MISSING_THOUGHT_SIGNATURE."""
    if err.reason == "MISSING_THOUGHT_SIGNATURE":
        return True
    text = err.message.lower()
    return err.status == 400 and "thought" in text and "signature" in text


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


def _contents(messages: list[c.Message], names: ToolNames, model: str,
              signer: _Signer) -> tuple[list[dict[str, Any]], list[str]]:
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
    """What decoding an answer needs from the request that asked for it; `origin` and `model`
    stamp the thought signatures the answer carries (who issued them)."""

    names: ToolNames = field(default_factory=lambda: ToolNames(()))
    visible_limit: int | None = None
    origin: str | None = None
    model: str | None = None

    def call(self, part: dict[str, Any]) -> c.ToolCall:
        fc = part["functionCall"]
        call_id = tool_call_id()
        value = part.get("thoughtSignature")
        return c.ToolCall(call_id, self.names.down(fc.get("name", "")),
                          json.dumps(fc.get("args") or {}, ensure_ascii=False),
                          c.Signature(value, self.origin, self.model, call_id) if value else None)

    def reasoning(self, value: str | None) -> c.Signature | None:
        # Clients refer to it by a key of its own (a Responses reasoning item's encrypted_content).
        return c.Signature(value, self.origin, self.model, new_id("sig_", 12)) if value else None


_JSON_BY_PROMPT = ("Answer with one JSON value only: no prose before or after it, no code fences.")


def prepare(req: c.ChatRequest, model: str, origin: str | None = None, *,
            safety: Sequence[Mapping[str, str]] | None = None,
            trust_signatures: bool = True) -> tuple[dict[str, Any], Reply]:
    """The GenerateContentRequest body for `model` (the mapped upstream name), and what decoding
    its answer needs; `origin` is the credential it goes to (see `_Signer`), `safety` the
    account's (or the gateway's) safetySettings list. `trust_signatures=False` sends no stored
    signature at all and the dummy on every model step's first call: the form Gemini accepts
    whatever the history."""
    rules = rules_for(model)
    names = ToolNames.of(req)
    contents, system = _contents(req.messages, names, model, _Signer(model, origin, trust_signatures))
    _strip_order(contents)
    if needs_signatures(model):
        _fill_required(contents, everywhere=not trust_signatures)
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


# ---- response ------------------------------------------------------------------------------
# What each finishReason (google-genai's FinishReason, promptFeedback.blockReason) becomes. None is
# ever a silent empty "stop":
#
#   STOP, FINISH_REASON_UNSPECIFIED, none   stop (tool_calls when the candidate called functions);
#                                           no text and no call (thoughts only) -> "empty answer" below
#   MAX_TOKENS, CONTINUATION                length (Responses: incomplete, max_output_tokens)
#   SAFETY, RECITATION, LANGUAGE, OTHER,    content_filter (Responses: incomplete, content_filter),
#   BLOCKLIST, PROHIBITED_CONTENT, SPII,    with whatever text came before; a prompt blocked by
#   IMAGE_*, NO_IMAGE, ESCALATION,          promptFeedback.blockReason (no candidates) likewise
#   MODEL_ARMOR, PUP_LIMITED_DISABLED
#   MALFORMED_FUNCTION_CALL,                the attempt failed (UnusableAnswer): retried once (next
#   UNEXPECTED_TOOL_CALL,                   account, or the same one), as gemini-cli retries these;
#   MALFORMED_RESPONSE, empty answer        then a 502 with code "malformed_function_call", ...
#   MISSING_THOUGHT_SIGNATURE               resent once to the same account with dummy signatures
#                                           (the provider), then as above
#   TOO_MANY_TOOL_CALLS                     502 "too_many_tool_calls", not retried (it would loop again)
#
# A candidate that produced valid function calls ends in tool_calls whatever the reason (gemini-cli
# only fails MALFORMED_FUNCTION_CALL when no call came). In a stream, a failure after the first
# byte ends the stream with the protocol's error event.

_LENGTH = frozenset({"MAX_TOKENS", "CONTINUATION"})
_FILTERED = frozenset({
    "SAFETY", "RECITATION", "LANGUAGE", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER", "NO_IMAGE", "ESCALATION", "MODEL_ARMOR",
    "PUP_LIMITED_DISABLED",
})
_FAILED = {
    "MALFORMED_FUNCTION_CALL": "The model produced a function call that could not be parsed",
    "UNEXPECTED_TOOL_CALL": "The model called a function that was not offered",
    "MALFORMED_RESPONSE": "The model produced a malformed response",
    "MISSING_THOUGHT_SIGNATURE": "The upstream found a thought signature missing in the request",
    "TOO_MANY_TOOL_CALLS": "The upstream's built-in tool loop hit its limit",
}
_NOT_RETRIED = frozenset({"TOO_MANY_TOOL_CALLS"})


def finish_reason(raw: str | None, had_tool_calls: bool, had_output: bool = True,
                  message: str | None = None) -> c.FinishReason:
    """A candidate's finishReason as OpenAI's; raises UnusableAnswer for an answer a client cannot
    use (see the table above). `had_output`: the candidate produced text or function calls."""
    # Gemini says STOP even when the turn ends in function calls; OpenAI clients key on tool_calls.
    if had_tool_calls:
        return "tool_calls"
    raw = raw or "STOP"
    if raw in _LENGTH:
        return "length"
    if raw in _FILTERED:
        return "content_filter"
    why = f" ({message})" if message else ""
    if raw in _FAILED:
        raise UnusableAnswer(f"{_FAILED[raw]}: finishReason {raw}{why}.", reason=raw, retry=raw not in _NOT_RETRIED)
    if not had_output:
        raise UnusableAnswer(f"The model returned an empty answer (finishReason {raw}{why}).",
                             reason="EMPTY_RESPONSE")
    return "stop"


def _blocked(data: dict[str, Any]) -> bool:
    return bool((data.get("promptFeedback") or {}).get("blockReason"))


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


def _reasoning_part(part: dict[str, Any]) -> tuple[str, str | None] | None:
    """(thought text, signature) of a thought part or of a signature-only part (an empty text part
    that carries the signature, as streams deliver it after the text); None for other parts.
    A signature on a non-empty answer text is not kept: Gemini does not validate those."""
    sig = part.get("thoughtSignature")
    if part.get("thought"):
        return part.get("text", ""), sig
    if sig and not part.get("text") and "functionCall" not in part:
        return "", sig
    return None


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
    """A whole GenerateContentResponse; its signatures are stamped with `reply`'s origin."""
    reply = reply or Reply()
    choices: list[c.Choice] = []
    for pos, cand in enumerate(data.get("candidates") or []):
        ch = c.Choice(index=cand.get("index", pos))
        bases: dict[int, int] = {}  # part index -> byte offset of that part in ch.text
        for k, part in enumerate((cand.get("content") or {}).get("parts") or []):
            thought = _reasoning_part(part)
            if "functionCall" in part:
                ch.tool_calls.append(reply.call(part))
            elif thought is not None:
                ch.reasoning += thought[0]
                ch.reasoning_signature = reply.reasoning(thought[1]) or ch.reasoning_signature
            elif "text" in part:
                bases[k] = len(ch.text.encode())
                ch.text += part["text"]
        ch.finish_reason = finish_reason(cand.get("finishReason"), bool(ch.tool_calls), bool(ch.text),
                                         cand.get("finishMessage"))
        ch.grounding = grounding_from(cand.get("groundingMetadata"), ch.text, bases)
        choices.append(ch)
    if not choices:
        if not _blocked(data):
            raise UnusableAnswer("The upstream answered without any candidate.", reason="EMPTY_RESPONSE")
        choices = [c.Choice(index=i, finish_reason="content_filter") for i in range(n)]
    elif reply.visible_limit is not None:
        _enforce_limit(choices, data.get("usageMetadata"), reply.visible_limit)
    return c.Completion(choices, usage_from(data.get("usageMetadata")), data.get("modelVersion"))


def unwrap(data: Any) -> Any:
    """Cloud Code wraps each GenerateContentResponse as {"response": ...}; the Gemini API does not."""
    if isinstance(data, dict) and isinstance(data.get("response"), dict):
        return data["response"]
    return data


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
    quota ran out, when it resets) are kept as data for the retry policy (addon/policy.py)."""
    message, reason, delay = body.decode("utf-8", "replace")[:500] or f"HTTP {status}", None, None
    quota_ids: list[str] = []
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        message = str(err.get("message") or message)
        info_reason, delay, quota_ids, links = _google_details(err)
        reason = info_reason or err.get("status")
        message += "".join(f" ({url})" for url in dict.fromkeys(links) if url not in message)
        if delay is None:  # the newer quota message says it in words: "Please retry in 38.96s."
            m = _PLEASE_RETRY.search(message)
            delay = parse_duration(m.group(1)) if m else None
    elif isinstance(data, dict) and isinstance(data.get("error"), str):  # OAuth token endpoint
        reason = data["error"]
        message = data.get("error_description") or reason
    if delay is None:
        delay = retry_after_header(headers)
    return UpstreamError(status, message, retry_after=delay, reason=reason, quota_ids=tuple(quota_ids))


def completion_from_body(body: bytes, n: int, reply: Reply | None = None) -> c.Completion:
    """A whole (possibly Cloud Code-wrapped) generateContent answer."""
    try:
        data = unwrap(jsonfast.loads(body))
        if not isinstance(data, dict):
            raise TypeError
        return completion_from(data, n, reply)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UpstreamError(502, "Upstream returned a body that is not a GenerateContentResponse.") from None


class GeminiStreamDecoder:
    """Gemini SSE payloads (each a partial GenerateContentResponse) -> canonical stream events."""

    def __init__(self, n: int = 1, reply: Reply | None = None) -> None:
        self._n = n
        self._reply = reply or Reply()
        self._calls: dict[int, int] = {}  # candidate -> tool calls emitted so far
        self._output: set[int] = set()  # candidates that produced text or calls
        self._finished: set[int] = set()
        self._usage: dict[str, Any] | None = None
        self._blocked = False
        self._failure: UnusableAnswer | None = None  # raised once the text before it was delivered
        self._texts: dict[int, list[str]] = {}  # candidate -> visible text so far (grounding offsets)
        self._grounding: dict[int, Any] = {}  # candidate -> latest groundingMetadata not yet sent
        self._chars: dict[int, int] = {}  # candidate -> visible characters so far (with a visible limit)
        self._chars_total = 0

    def feed(self, payload: str) -> list[c.StreamEvent]:
        if self._failure is not None:
            raise self._failure
        try:
            data = jsonfast.loads(payload)
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
        if not candidates and _blocked(data):
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
                thought = _reasoning_part(part)
                if "functionCall" in part:
                    call = self._reply.call(part)
                    k = self._calls.get(idx, 0)
                    self._calls[idx] = k + 1
                    self._output.add(idx)
                    # Header first, then the arguments: clients see a real incremental call.
                    events.append(c.ToolCallDelta(idx, k, "", id=call.id, name=call.name, signature=call.signature))
                    events.append(c.ToolCallDelta(idx, k, call.arguments))
                elif thought is not None:
                    if thought[0] or thought[1]:
                        events.append(c.ReasoningDelta(idx, thought[0], self._reply.reasoning(thought[1])))
                elif part.get("text"):
                    text, over = part["text"], False
                    if limit is not None:
                        text, over = self._within_limit(idx, text, limit)
                    if text:
                        self._output.add(idx)
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
                try:
                    reason = finish_reason(cand["finishReason"], self._calls.get(idx, 0) > 0, idx in self._output,
                                           cand.get("finishMessage"))
                except UnusableAnswer as err:
                    self._failure = err
                    break
                events.append(c.Finish(idx, reason))
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
        if self._failure is not None:
            raise self._failure
        if not self.complete:
            raise UpstreamError(502, "Upstream stream ended before the answer was complete.")
        events: list[c.StreamEvent] = []
        for idx in list(self._grounding):
            events += self._grounding_event(idx)
        if self._blocked:
            events += [c.Finish(i, "content_filter") for i in range(self._n) if i not in self._finished]
        events.append(c.UsageUpdate(usage_from(self._usage)))
        return events
