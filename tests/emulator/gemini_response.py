"""Gemini ``GenerateContentResponse`` building and streaming, shared by the Gemini API and Cloud Code."""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web

from addon.backends.gemini.models import rules_for

from .answers import Answer, apply_limits, compose_answer, n_answers, words
from .gemini_request import GenRequest, gemini3_or_later
from .state import EmulatorState
from .wire import Call, compact, rand_id, write_stream


def request_words(req: GenRequest) -> int:
    n = words(req.system_text)
    for content in req.contents:
        for p in content["parts"]:
            if isinstance(p.get("text"), str):
                n += words(p["text"])
            elif "functionCall" in p:
                n += words(compact(p["functionCall"]))
            elif "functionResponse" in p:
                n += words(compact(p["functionResponse"]))
    return n


# Emulated thinking, in tokens (= words here): enough that a small maxOutputTokens on a thinking
# model comes back empty, as on the real API.
DYNAMIC_THOUGHTS = 64
LEVEL_THOUGHTS = {"minimal": 8, "low": 32, "medium": 64, "high": 128}


def thought_tokens(model: str, thinking: dict[str, Any]) -> int:
    rules = rules_for(model)
    if not rules.known:
        return 0
    level, budget = thinking.get("thinkingLevel"), thinking.get("thinkingBudget")
    if isinstance(level, str) and level.lower() in LEVEL_THOUGHTS:
        return LEVEL_THOUGHTS[level.lower()]
    if isinstance(budget, int):
        return DYNAMIC_THOUGHTS if budget == -1 else min(budget, DYNAMIC_THOUGHTS)
    if rules.levels:
        return LEVEL_THOUGHTS.get(rules.default_level or "high", DYNAMIC_THOUGHTS)
    return DYNAMIC_THOUGHTS if rules.thinks_by_default else 0


def gemini_answer(req: GenRequest, model: str, reply: dict[str, Any] | None) -> list[Answer]:
    last = next((c for c in reversed(req.contents) if c["role"] == "user"), {"parts": []})
    last_text = "".join(p["text"] for p in last["parts"] if isinstance(p.get("text"), str) and not p.get("thought"))
    results = [(p["functionResponse"]["name"], p["functionResponse"].get("response"))
               for p in last["parts"] if "functionResponse" in p]
    declared = req.declared if req.fc_mode != "NONE" else set()
    json_mode = req.config.get("responseMimeType") == "application/json"
    ans = compose_answer(model, last_text, results, declared, json_mode, reply)
    if ans.thought is None and req.thinking.get("includeThoughts"):
        ans.thought = "Thinking about it..."
    if not req.google_search:
        ans.grounding = None  # no search tool, no search
    elif ans.grounding is None and ans.text and not ans.function_calls:
        ans.grounding = {"queries": [last_text[:60]], "supports": [{"text": ans.text.strip()}]}
    if not ans.exact:
        ans.thought_tokens = thought_tokens(model, req.thinking)
    ans = apply_limits(ans, req.config.get("maxOutputTokens"), req.config.get("stopSequences") or [])
    return n_answers(ans, req.config.get("candidateCount") or 1)


def grounding_metadata(spec: dict[str, Any], text: str) -> dict[str, Any]:
    """A rule's `grounding` ({"queries", "sources": [{"uri", "title"}], "supports": [{"text", "sources"}]})
    as Google's groundingMetadata: segments in UTF-8 *byte* offsets, a zero startIndex left out as
    proto3 JSON does (ai.google.dev API reference, GroundingSupport / Segment)."""
    sources = spec.get("sources") or [{"uri": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/emu0",
                                       "title": "example.com"}]
    supports = []
    for sup in spec.get("supports") or []:
        pos = text.find(sup["text"])
        if pos < 0 or not sup["text"]:
            continue
        start = len(text[:pos].encode())
        segment: dict[str, Any] = {"endIndex": start + len(sup["text"].encode()), "text": sup["text"]}
        if start:
            segment["startIndex"] = start
        indices = sup.get("sources") or [0]
        supports.append({"segment": segment, "groundingChunkIndices": indices,
                         "confidenceScores": [0.9] * len(indices)})
    return {"webSearchQueries": spec.get("queries") or [],
            "searchEntryPoint": {"renderedContent": "<div class=\"emulated-search\"></div>"},
            "groundingChunks": [{"web": {"uri": s["uri"], "title": s.get("title", "")}} for s in sources],
            "groundingSupports": supports}


def _fc_parts(calls: list[dict[str, Any]], signature: str | None) -> list[dict[str, Any]]:
    parts = [{"functionCall": {"name": c["name"], "args": c.get("args") or {}}} for c in calls]
    if parts and signature:
        parts[0]["thoughtSignature"] = signature
    return parts


def _gemini_chunks(ans: Answer, signature: str | None, stream: bool) -> list[list[dict[str, Any]]]:
    """The answer as a list of part-lists: one per SSE event when streaming, flattened otherwise.

    Where the signature goes (ai.google.dev/gemini-api/docs/thought-signatures): on the first
    functionCall; with no call, on the last part, which a stream sends as a later chunk with empty
    text (pydantic/pydantic-ai#3481)."""
    chunks: list[list[dict[str, Any]]] = []
    if ans.thought:
        chunks.append([{"text": ans.thought, "thought": True}])
    if stream:
        chunks.extend([{"text": piece}] for piece in ans.text_chunks())
    elif ans.text:
        chunks.append([{"text": ans.text}])
    if ans.function_calls:
        chunks.append(_fc_parts(ans.function_calls, signature))  # a functionCall is never split
    elif signature and ans.text:
        if stream:
            chunks.append([{"text": "", "thoughtSignature": signature}])
        else:
            chunks[-1][-1]["thoughtSignature"] = signature
    return chunks or [[]]


def _content(parts: list[dict[str, Any]]) -> dict[str, Any]:
    # With no parts (e.g. thinking burned the whole budget) Gemini sends just the role.
    return {"parts": parts, "role": "model"} if parts else {"role": "model"}


def _part_words(parts: list[dict[str, Any]]) -> tuple[int, int]:
    """(candidate words, thought words) of some parts."""
    cand = thought = 0
    for p in parts:
        if "text" in p:
            if p.get("thought"):
                thought += words(p["text"])
            else:
                cand += words(p["text"])
        elif "functionCall" in p:
            cand += words(compact(p["functionCall"]))
    return cand, thought


def _usage(prompt: int, cand: int, thought: int, final: bool = True) -> dict[str, int]:
    usage = {"promptTokenCount": prompt}
    if cand or final:
        usage["candidatesTokenCount"] = cand
    usage["totalTokenCount"] = prompt + cand + thought
    if thought:
        usage["thoughtsTokenCount"] = thought
    return usage


def gemini_events(answers: list[Answer], model: str, prompt: int, state: EmulatorState,
                  stream: bool, credential: str | None = None, served: str | None = None) -> list[dict[str, Any]]:
    """GenerateContentResponse objects: exactly one unless streaming.

    Streaming: each event carries only new parts, cumulative usage, and finishReason on the
    last event only (for every candidate). Gemini 3 signs each answer with a signature bound
    to the requesting `credential`. `served`: the model that answers a re-routed name, which
    `modelVersion` names.
    """
    signed = gemini3_or_later(model)
    per_cand = [_gemini_chunks(a, state.issue_signature(credential) if signed and (a.function_calls or a.text)
                               else None, stream) for a in answers]
    if not stream:
        per_cand = [[[p for chunk in chunks for p in chunk]] for chunks in per_cand]
    n_events = max(len(c) for c in per_cand)
    rid = secrets.token_urlsafe(16)[:22]
    cand_words, thought_words = 0, sum(a.thought_tokens for a in answers)
    hidden = thought_words > 0  # the thinking is counted already; its summary text is part of it
    events = []
    for k in range(n_events):
        last = k == n_events - 1
        candidates = []
        for i, chunks in enumerate(per_cand):
            if k >= len(chunks) and not last:
                continue
            parts = chunks[k] if k < len(chunks) else []
            c, t = _part_words(parts)
            cand_words, thought_words = cand_words + c, thought_words + (0 if hidden else t)
            cand: dict[str, Any] = {"content": _content(parts)}
            if last:
                cand["finishReason"] = answers[i].finish
                if answers[i].grounding is not None:  # Google sends it with the last event
                    cand["groundingMetadata"] = grounding_metadata(answers[i].grounding, answers[i].text)
            cand["index"] = i
            candidates.append(cand)
        events.append({"candidates": candidates, "usageMetadata": _usage(prompt, cand_words, thought_words, last),
                       "modelVersion": served or model, "responseId": rid})
    return events


def _sse_google(obj: Any) -> bytes:
    # Google frames SSE events with CRLF; parsers that only split on "\n\n" break here.
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\r\n\r\n"


def _strip_finish(event: dict[str, Any]) -> None:
    for cand in event.get("candidates", []):
        cand.pop("finishReason", None)


async def respond_generate(call: Call, req: GenRequest, model: str, stream: bool, sse: bool,
                           wrap: bool, served: str | None = None) -> web.StreamResponse:
    """Shared by the Gemini API and Cloud Code (``wrap`` adds the v1internal envelope)."""
    answers = gemini_answer(req, model, call.reply)
    events = gemini_events(answers, model, request_words(req), call.state, stream, call.credential, served)
    trace = rand_id(8)

    def pack(event: dict[str, Any]) -> Any:
        return {"response": event, "traceId": trace} if wrap else event

    if not stream:
        return web.json_response(pack(events[0]))
    if not sse:  # streamGenerateContent without alt=sse returns one JSON array
        return web.json_response([pack(e) for e in events])
    cut = call.mod("cut_after")
    if cut is not None and cut >= len(events):
        _strip_finish(events[-1])  # a cut stream never delivers a finishReason
    return await write_stream(call, [_sse_google(pack(e)) for e in events], cut, "text/event-stream")
