"""An OpenAI-compatible server (``/openai/v1/chat/completions``, ``/openai/v1/models``)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web

from .answers import GEMINI_TO_OPENAI_FINISH, Answer, apply_limits, compose_answer, n_answers, words
from .embeddings import OPENAI_EMBEDDERS, openai_embed
from .wire import Call, bearer, begin, compact, error_response, rand_id, read_body, write_stream

OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-5", "o3-mini", "emulator-echo")
OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Reasoning models refuse the old limit field (reported for o1, o3-mini, gpt-5, gpt-5.1: e.g.
# https://github.com/griptape-ai/griptape/issues/312, https://github.com/teilomillet/gollm/issues/33).
NO_MAX_TOKENS = re.compile(r"^(o\d|gpt-5)")


def _openai_auth(call: Call) -> web.Response | None:
    key = call.key
    if not key:
        return error_response("openai", 401, "You didn't provide an API key. You need to provide your API key in "
                              "an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                              openai_code="missing_api_key")
    if key.startswith("bad"):
        return error_response("openai", 401, f"Incorrect API key provided: {key[:3]}***{key[-4:]}.")
    return None


def _openai_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _check_image_parts(message: Any) -> tuple[str, str | None, str] | None:
    """An image_url part must hold an image: audio or a PDF sent that way is refused with this text
    (reported in https://github.com/langgenius/dify/issues/11527)."""
    content = message.get("content") if isinstance(message, dict) else None
    for part in content if isinstance(content, list) else []:
        image = part.get("image_url") if isinstance(part, dict) and part.get("type") == "image_url" else None
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str) and url.startswith("data:") and not url.startswith("data:image/"):
            return "Invalid MIME type. Only image types are supported.", None, "invalid_image_format"
    return None


def _openai_validate(body: Any) -> tuple[str, str | None] | tuple[str, str | None, str] | None:
    """(message, param[, code]) for the first problem, or None. Mirrors OpenAI's tool-call
    sequencing rules, its limit field for reasoning models and its image check."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", None
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "[] is too short - 'messages'", "messages"
    if "max_tokens" in body and NO_MAX_TOKENS.match(body["model"]):
        return ("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
                "'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
    pending: set[str] = set()  # tool_call ids still waiting for a tool message
    for i, m in enumerate(msgs):
        problem = _check_image_parts(m)
        if problem is not None:
            return problem
        if not isinstance(m, dict) or m.get("role") not in OPENAI_ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            return (f"Invalid value: '{role}'. Supported values are: 'system', 'assistant', 'user', 'function', "
                    "'tool', and 'developer'."), f"messages[{i}].role"
        if pending and m["role"] != "tool":
            return ("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                    f"'tool_call_id'. The following tool_call_ids did not have response messages: "
                    f"{', '.join(sorted(pending))}"), f"messages.[{i}].role"
        if m["role"] == "tool":
            if not m.get("tool_call_id"):
                return "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.", \
                    f"messages.[{i}].tool_call_id"
            if m["tool_call_id"] not in pending:
                return ("Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                        "with 'tool_calls'."), f"messages.[{i}].role"
            pending.discard(m["tool_call_id"])
        if m["role"] == "assistant":
            pending = {tc.get("id") for tc in m.get("tool_calls") or [] if isinstance(tc, dict)}
    if pending:
        return ("An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. The following tool_call_ids did not have response messages: "
                f"{', '.join(sorted(pending))}"), f"messages.[{len(msgs) - 1}].role"
    return None


def openai_answer(body: dict[str, Any], reply: dict[str, Any] | None) -> list[Answer]:
    msgs = body["messages"]
    names = {tc["id"]: tc.get("function", {}).get("name", "?")
             for m in msgs if m.get("role") == "assistant" for tc in m.get("tool_calls") or []
             if isinstance(tc, dict) and "id" in tc}
    results: list[tuple[str, Any]] = []
    for m in reversed(msgs):  # trailing tool messages are "the last user turn"
        if m.get("role") != "tool":
            break
        content = _openai_text(m.get("content"))
        try:
            content = json.loads(content)
        except ValueError:
            pass
        results.insert(0, (names.get(m["tool_call_id"], "?"), content))
    last = next((m for m in reversed(msgs) if m.get("role") == "user"), {})
    declared = {t["function"]["name"] for t in body.get("tools") or []
                if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]}
    if body.get("tool_choice") == "none":
        declared = set()
    fmt = body.get("response_format") or {}
    json_mode = isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")
    ans = compose_answer(body["model"], _openai_text(last.get("content")), results, declared, json_mode, reply)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    ans = apply_limits(ans, body.get("max_completion_tokens") or body.get("max_tokens"), stops)
    return n_answers(ans, body.get("n") or 1)


def _openai_finish(ans: Answer) -> str:
    if ans.function_calls and ans.finish == "STOP":
        return "tool_calls"
    return GEMINI_TO_OPENAI_FINISH.get(ans.finish, ans.finish.lower())


def _tool_calls(ans: Answer) -> list[dict[str, Any]]:
    return [{"id": f"call_{rand_id(12)}", "type": "function",
             "function": {"name": c["name"], "arguments": compact(c.get("args") or {})}}
            for c in ans.function_calls]


def _openai_usage(prompt: int, answers: list[Answer]) -> dict[str, int]:
    completion = sum(words(a.text) + sum(words(compact(c)) for c in a.function_calls) for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _openai_prompt_words(body: dict[str, Any]) -> int:
    return sum(words(_openai_text(m.get("content"))) for m in body["messages"])


def openai_completion(body: dict[str, Any], answers: list[Answer]) -> dict[str, Any]:
    choices = []
    for i, ans in enumerate(answers):
        msg: dict[str, Any] = {"role": "assistant", "content": ans.text or (None if ans.function_calls else ""),
                               "refusal": None}
        if ans.thought:
            msg["reasoning_content"] = ans.thought  # the de-facto field of OpenAI-compatible servers
        if ans.function_calls:
            msg["tool_calls"] = _tool_calls(ans)
        choices.append({"index": i, "message": msg, "logprobs": None, "finish_reason": _openai_finish(ans)})
    return {"id": f"chatcmpl-{rand_id(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": choices,
            "usage": _openai_usage(_openai_prompt_words(body), answers), "system_fingerprint": "fp_emulator"}


def _sse_openai(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def openai_stream_events(body: dict[str, Any], answers: list[Answer]) -> tuple[list[dict], list[dict]]:
    """(content chunks, tail chunks). The tail (finish + usage) is what a cut stream never gets."""
    cid, created = f"chatcmpl-{rand_id(12)}", int(time.time())
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        c = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": body["model"],
             "system_fingerprint": "fp_emulator",
             "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            c["usage"] = None
        return c

    content: list[dict] = []
    tail: list[dict] = []
    for i, ans in enumerate(answers):
        content.append(chunk(i, {"role": "assistant", "content": "", "refusal": None}))
        if ans.thought:
            content.append(chunk(i, {"reasoning_content": ans.thought}))
        content.extend(chunk(i, {"content": piece}) for piece in ans.text_chunks())
        for j, tc in enumerate(_tool_calls(ans)):
            args = tc["function"]["arguments"]
            half = max(1, len(args) // 2)  # arguments always arrive in >= 2 deltas
            content.append(chunk(i, {"tool_calls": [{"index": j, "id": tc["id"], "type": "function",
                                                     "function": {"name": tc["function"]["name"],
                                                                  "arguments": ""}}]}))
            for piece in (args[:half], args[half:]):
                content.append(chunk(i, {"tool_calls": [{"index": j, "function": {"arguments": piece}}]}))
        tail.append(chunk(i, {}, _openai_finish(ans)))
    if include_usage:
        final = chunk(0, {})
        final["choices"] = []
        final["usage"] = _openai_usage(_openai_prompt_words(body), answers)
        tail.append(final)
    return content, tail


async def openai_chat(request: web.Request) -> web.StreamResponse:
    body, parsed = await read_body(request)
    key = bearer(request)
    model = body.get("model") if isinstance(body, dict) else None
    call, early = await begin(request, "openai", body, key, model, auth=_openai_auth)
    if early is not None:
        return early
    problem = _openai_validate(body) if parsed else ("We could not parse the JSON body of your request.", None)
    if problem is not None:
        return error_response("openai", 400, problem[0], param=problem[1],
                              openai_code=problem[2] if len(problem) > 2 else None)
    answers = openai_answer(body, call.reply)
    if not body.get("stream"):
        return web.json_response(openai_completion(body, answers))
    content, tail = openai_stream_events(body, answers)
    events = [_sse_openai(e) for e in content + tail] + [b"data: [DONE]\n\n"]
    cut = call.mod("cut_after")
    if cut is not None:
        cut = min(cut, len(content))
    return await write_stream(call, events, cut, "text/event-stream; charset=utf-8")


async def openai_models(request: web.Request) -> web.StreamResponse:
    key = bearer(request)
    _, early = await begin(request, "openai", None, key, None, auth=_openai_auth)
    if early is not None:
        return early
    return web.json_response({"object": "list", "data": [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "emulator"}
        for m in (*OPENAI_MODELS, *OPENAI_EMBEDDERS)]})


async def openai_embeddings(request: web.Request) -> web.StreamResponse:
    body, parsed = await read_body(request)
    call, early = await begin(request, "openai", body, bearer(request), body.get("model") if isinstance(body, dict)
                              else None, auth=_openai_auth)
    if early is not None:
        return early
    if not parsed:
        return error_response("openai", 400, "We could not parse the JSON body of your request.")
    return await openai_embed(call, body)
