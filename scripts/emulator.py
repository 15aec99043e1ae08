#!/usr/bin/env python3
"""Loopback emulator of the gateway's upstreams, with fault injection.

Emulates, on one aiohttp server:
  * the Gemini API (``/v1beta/models/{model}:generateContent`` / ``:streamGenerateContent``),
  * Google Cloud Code (``/v1internal:generateContent`` / ``:streamGenerateContent``),
  * Google's OAuth token endpoint (``/token``, refresh_token grant only),
  * an OpenAI-compatible server (``/openai/v1/chat/completions``, ``/openai/v1/models``),
and a JSON control API under ``/__control/`` for fault rules and inspection.

The point is to be *strict where the real services are strict* (request validation,
function-call pairing, Gemini 3 thought signatures, SSE framing) so end-to-end tests
catch translation bugs, while staying cheap enough to serve benchmarks: no per-request
work beyond a single walk of the request JSON.

CLI:    python scripts/emulator.py --host 127.0.0.1 --port 0 [--port-file PATH]
        prints ``EMULATOR_READY http://127.0.0.1:<port>`` once listening.
Import: ``make_app(state)`` / ``await start(host, port)`` -> (runner, base_url).

Only stdlib + aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import math
import re
import secrets
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------

LOG_LIMIT = 5000  # bounded so long benchmark runs don't grow memory without limit
TRUNCATE = 200  # chars of user text echoed back

GEMINI_MODELS = (
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-2.5-flash-lite",
    "gemini-3-pro-preview",
    "gemini-3-flash",
)
OPENAI_MODELS = ("gpt-4o", "gpt-4o-mini", "emulator-echo")

# Gemini 3 documents these dummy values as "skip validation" escape hatches.
MAGIC_SIGNATURES = frozenset({"skip_thought_signature_validator", "context_engineering_is_the_way_to_go"})

RULE_KEYS = frozenset(
    {"match", "times", "status", "message", "retry_delay", "retry_after", "reply",
     "delay_ms", "chunk_delay_ms", "cut_after", "drop"}
)
MATCH_KEYS = frozenset({"key", "path_contains", "model"})
REPLY_KEYS = frozenset({"text", "chunks", "function_calls", "finish_reason", "thought"})
CONFIG_KEYS = frozenset({"token_ttl", "refresh_delay_ms", "signature_scope"})


@dataclass
class EmulatorState:
    """Everything mutable about one emulator instance (one per app)."""

    rules: list[dict[str, Any]] = field(default_factory=list)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    refreshes: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    access_tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry
    signatures: set[str] = field(default_factory=set)  # thought signatures we issued
    token_ttl: int = 3600
    refresh_delay_ms: int = 0
    aborted_streams: int = 0  # streams whose client went away before the end
    # "turn": like Gemini 3, only validate signatures in the current turn (model turns
    # after the last user text message). "all": every model function-call turn.
    signature_scope: str = "turn"

    def reset(self) -> None:
        """Clear rules, logs, counters and issued credentials (config is kept)."""
        self.rules.clear()
        self.log.clear()
        self.refreshes.clear()
        self.requests = 0
        self.aborted_streams = 0
        self.access_tokens.clear()
        self.signatures.clear()

    def take_rule(self, path: str, key: str | None, model: str | None) -> dict[str, Any] | None:
        """First matching rule, consuming one of its ``times``.

        No await happens between match and decrement, so this is race-free on one loop.
        """
        for i, rule in enumerate(self.rules):
            match = rule.get("match") or {}
            if "key" in match and match["key"] != key:
                continue
            if "path_contains" in match and match["path_contains"] not in path:
                continue
            if "model" in match and match["model"] != model:
                continue
            if rule.get("times") is not None:
                rule["times"] -= 1
                if rule["times"] <= 0:
                    del self.rules[i]
            return rule
        return None

    def issue_token(self) -> str:
        token = "ya29." + secrets.token_urlsafe(32)
        self.access_tokens[token] = time.monotonic() + self.token_ttl
        return token

    def token_valid(self, token: str | None) -> bool:
        expiry = self.access_tokens.get(token or "")
        return expiry is not None and time.monotonic() < expiry

    def issue_signature(self) -> str:
        sig = base64.b64encode(f"sig:{secrets.token_hex(8)}".encode()).decode()
        self.signatures.add(sig)
        return sig


STATE = web.AppKey("emulator_state", EmulatorState)


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _words(text: str) -> int:
    """Token-count approximation: whitespace-separated words (cheap and deterministic)."""
    return len(text.split())


def _split_words(text: str, n: int = 4) -> list[str]:
    """Split text into ~n chunks on word boundaries; ''.join(result) == text."""
    tokens = re.findall(r"\s*\S+", text)
    if not tokens:
        return [text] if text else []
    tokens[-1] += text[sum(map(len, tokens)):]  # trailing whitespace stays with the last word
    size = math.ceil(len(tokens) / n)
    return ["".join(tokens[i : i + size]) for i in range(0, len(tokens), size)]


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _rand_id(n: int = 12) -> str:
    return secrets.token_hex(n)


def _b64_ok(value: str) -> bool:
    """Proto JSON accepts standard and URL-safe base64, with or without padding."""
    padded = (value + "=" * (-len(value) % 4)).replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def _camel(key: str) -> str:
    """Proto JSON accepts snake_case field names too; normalise to camelCase."""
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


async def _read_body(request: web.Request) -> tuple[Any, bool]:
    """Parsed body (JSON, or form dict for form posts) and whether parsing succeeded."""
    raw = await request.read()
    if request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        return {k: form.get(k) for k in form.keys()}, True
    if not raw:
        return None, True
    try:
        return json.loads(raw), True
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace"), False


# --------------------------------------------------------------------------------------
# Errors, one shape per upstream flavour
# --------------------------------------------------------------------------------------

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
GOOGLE_MESSAGES = {
    400: "Request contains an invalid argument.",
    401: "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
         "or other valid authentication credential.",
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
         "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}
OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                404: "invalid_request_error", 429: "requests"}
OPENAI_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
OAUTH_CODES = {400: "invalid_request", 401: "invalid_client", 403: "access_denied",
               429: "rate_limit_exceeded", 503: "temporarily_unavailable"}


def google_error_body(code: int, message: str | None = None, details: list[dict] | None = None,
                      retry_delay: str | None = None) -> dict[str, Any]:
    details = list(details or [])
    if retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    err: dict[str, Any] = {
        "code": code,
        "message": message or GOOGLE_MESSAGES.get(code, "Unknown error."),
        "status": GOOGLE_STATUS.get(code, "UNKNOWN"),
    }
    if details:
        err["details"] = details
    return {"error": err}


def error_response(flavor: str, code: int, message: str | None = None, *, details: list[dict] | None = None,
                   retry_delay: str | None = None, retry_after: str | None = None,
                   openai_code: str | None = None, param: str | None = None) -> web.Response:
    """An error in the wire format of the endpoint family that was called."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    if flavor in ("gemini", "cloudcode"):
        body: Any = google_error_body(code, message, details, retry_delay)
        if flavor == "cloudcode":
            body = [body]  # the v1internal backend returns errors wrapped in an array
    elif flavor == "openai":
        default = "The server had an error while processing your request." if code >= 500 else f"Error {code}"
        body = {"error": {"message": message or default,
                          "type": OPENAI_TYPES.get(code, "server_error" if code >= 500 else "invalid_request_error"),
                          "param": param, "code": openai_code or OPENAI_CODES.get(code)}}
    else:  # oauth
        body = {"error": OAUTH_CODES.get(code, "server_error"),
                "error_description": message or f"Error {code}"}
    return web.json_response(body, status=code, headers=headers)


class GeminiInvalid(Exception):
    """A 400 INVALID_ARGUMENT with a Google-style message (and optional BadRequest details)."""

    def __init__(self, message: str, violations: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = ([{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}]
                        if violations else None)


# --------------------------------------------------------------------------------------
# Per-request pipeline shared by every emulated endpoint
# --------------------------------------------------------------------------------------


@dataclass
class Call:
    request: web.Request
    state: EmulatorState
    flavor: str
    rule: dict[str, Any] | None

    def mod(self, name: str) -> Any:
        return (self.rule or {}).get(name)

    @property
    def reply(self) -> dict[str, Any] | None:
        return self.mod("reply")


async def begin(request: web.Request, flavor: str, body: Any, key: str | None,
                model: str | None) -> tuple[Call, web.StreamResponse | None]:
    """Log the request, pick a fault rule and apply its pre-response effects.

    Returns the call context and, if the rule decided the outcome (status/drop), the
    response to return immediately.
    """
    state = request.app[STATE]
    state.requests += 1
    state.log.append({
        "time": time.time(), "path": request.path, "query": dict(request.query), "method": request.method,
        "headers": {k.lower(): v for k, v in request.headers.items()}, "body": body, "key": key,
    })
    rule = state.take_rule(request.path_qs, key, model)
    call = Call(request, state, flavor, rule)
    if call.mod("delay_ms"):
        await asyncio.sleep(call.mod("delay_ms") / 1000)
    if call.mod("drop"):
        return call, _drop(request)
    if call.mod("status") is not None:
        return call, error_response(flavor, int(call.mod("status")), call.mod("message"),
                                    retry_delay=call.mod("retry_delay"), retry_after=call.mod("retry_after"))
    return call, None


def _drop(request: web.Request) -> web.Response:
    """Close the socket with no response; aiohttp silently skips writing to a closed transport."""
    if request.transport is not None:
        request.transport.close()
    return web.Response()


async def write_stream(call: Call, events: list[bytes], cut: int | None, content_type: str) -> web.StreamResponse:
    """Write SSE events one by one (flushing each); optionally die after ``cut`` events."""
    resp = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    await resp.prepare(call.request)
    delay = (call.mod("chunk_delay_ms") or 0) / 1000
    try:
        for i, event in enumerate(events):
            if cut is not None and i >= cut:
                break
            if i and delay:
                await asyncio.sleep(delay)
            await resp.write(event)
        if cut is not None:
            # Abrupt close: the chunked body never gets its terminator, like a dropped upstream.
            if call.request.transport is not None:
                call.request.transport.close()
            return resp
        await resp.write_eof()
    except ConnectionError:
        call.state.aborted_streams += 1  # client went away mid-stream; nothing to clean up
    return resp


# --------------------------------------------------------------------------------------
# What the emulated model says
# --------------------------------------------------------------------------------------

TOOL_DIRECTIVE = re.compile(r"\[\[tool:([A-Za-z_][\w.:-]*)\s*(.*?)\]\]", re.DOTALL)
OPENAI_TO_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY", "tool_calls": "STOP"}
GEMINI_TO_OPENAI_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
                           "RECITATION": "content_filter", "PROHIBITED_CONTENT": "content_filter",
                           "BLOCKLIST": "content_filter", "SPII": "content_filter"}


@dataclass
class Answer:
    """Flavour-neutral model output; finish uses Gemini vocabulary."""

    text: str = ""
    function_calls: list[dict[str, Any]] = field(default_factory=list)
    finish: str = "STOP"
    thought: str | None = None
    chunks: list[str] | None = None  # exact stream chunking (from a reply rule)
    exact: bool = False  # from a reply rule: limits (max tokens, stop) don't apply

    def text_chunks(self) -> list[str]:
        return self.chunks if self.chunks is not None else _split_words(self.text)


def _parse_directives(text: str, declared: set[str]) -> list[dict[str, Any]]:
    calls = []
    for name, raw_args in TOOL_DIRECTIVE.findall(text):
        if name not in declared:
            continue
        try:
            args = json.loads(raw_args) if raw_args.strip() else {}
        except ValueError:
            args = {}
        calls.append({"name": name, "args": args if isinstance(args, dict) else {"value": args}})
    return calls


def compose_answer(model: str, last_text: str, tool_results: list[tuple[str, Any]], declared: set[str],
                   json_mode: bool, reply: dict[str, Any] | None) -> Answer:
    """The deterministic 'model': echo, tool-call directives, tool-result summaries, or a rule's reply."""
    if reply is not None:
        chunks = reply.get("chunks")
        text = reply.get("text", "".join(chunks) if chunks else "")
        finish = reply.get("finish_reason") or "STOP"
        return Answer(text=text, chunks=chunks, function_calls=list(reply.get("function_calls") or []),
                      finish=OPENAI_TO_GEMINI_FINISH.get(finish, finish), thought=reply.get("thought"), exact=True)
    if tool_results:
        text = "; ".join(f"Tool {name} returned: {_compact(resp)}" for name, resp in tool_results)
        return Answer(text=text[:TRUNCATE])
    calls = _parse_directives(last_text, declared)
    if calls:
        return Answer(function_calls=calls)
    if json_mode or "[[json]]" in last_text:
        return Answer(text=json.dumps({"echo": last_text[:TRUNCATE]}))
    return Answer(text=f"Echo({model}): {last_text[:TRUNCATE]}")


def apply_limits(ans: Answer, max_tokens: int | None, stops: list[str]) -> Answer:
    """Emulate stop sequences (finish STOP) and output-token limits (finish MAX_TOKENS)."""
    if ans.exact:
        return ans
    text = ans.text
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
    if max_tokens is not None and _words(text) > max_tokens:
        text = "".join(re.findall(r"\s*\S+", text)[: max(max_tokens, 0)]).strip()
        ans.finish = "MAX_TOKENS"
    ans.text = text
    return ans


def _answers(base: Answer, n: int) -> list[Answer]:
    """candidateCount / n: N copies, later ones slightly different so tests can tell them apart."""
    out = [base]
    for i in range(1, max(n, 1)):
        suffix = f" (candidate {i})" if base.text else ""
        out.append(Answer(text=base.text + suffix, function_calls=base.function_calls, finish=base.finish,
                          thought=base.thought,
                          chunks=None if base.chunks is None else [*base.chunks, suffix] if suffix else base.chunks,
                          exact=base.exact))
    return out


# --------------------------------------------------------------------------------------
# Gemini request validation
# --------------------------------------------------------------------------------------

TOP_KEYS = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
                      "safetySettings", "cachedContent", "labels", "model"})
CONTENT_KEYS = frozenset({"role", "parts"})
PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse",
             "executableCode", "codeExecutionResult")
PART_KEYS = frozenset(PART_DATA + ("thought", "thoughtSignature", "videoMetadata", "partMetadata"))
TOOL_KEYS = frozenset({"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution",
                       "urlContext", "computerUse", "fileSearch", "googleMaps"})
FDECL_KEYS = frozenset({"name", "description", "parameters", "parametersJsonSchema", "response",
                        "responseJsonSchema", "behavior"})
SCHEMA_KEYS = frozenset({"type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems",
                         "properties", "required", "minProperties", "maxProperties", "minLength", "maxLength",
                         "pattern", "example", "anyOf", "propertyOrdering", "default", "items", "minimum",
                         "maximum"})
SCHEMA_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})
GEN_KEYS = frozenset({"temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "candidateCount", "seed",
                      "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
                      "responseJsonSchema", "thinkingConfig", "responseModalities",
                      # real fields a gateway might legitimately forward
                      "responseLogprobs", "logprobs", "mediaResolution", "speechConfig", "imageConfig"})
THINKING_KEYS = frozenset({"thinkingBudget", "includeThoughts", "thinkingLevel"})
FC_MODES = frozenset({"AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"})
MIME_TYPES = frozenset({"text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"})
FUNC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
PROTO = "type.googleapis.com/google.ai.generativelanguage.v1beta."


@dataclass
class GenRequest:
    """The validated, camelCase-normalised parts of a GenerateContentRequest we act on."""

    contents: list[dict[str, Any]]
    system_text: str
    declared: set[str]
    fc_mode: str
    config: dict[str, Any]
    thinking: dict[str, Any]


class _Validator:
    """Collects errors like the real API: JSON-shape errors (unknown names, wrong types)
    are reported together and win over semantic errors ("* GenerateContentRequest.x: ...")."""

    def __init__(self) -> None:
        self.parse_errors: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def known(self, obj: dict[str, Any], allowed: frozenset[str], where: str) -> dict[str, Any]:
        out = {}
        for key, value in obj.items():
            ck = _camel(key)
            if ck in allowed:
                out[ck] = value
            else:
                at = f" at '{where}'" if where else ""
                self.parse_errors.append(
                    (where, f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'))
        return out

    def bad_value(self, where: str, typename: str, value: Any) -> None:
        self.parse_errors.append(
            (where, f"Invalid JSON payload received. Invalid value at '{where}' ({typename}), {_compact(value)}"))

    def fail(self, where: str, desc: str) -> None:
        self.errors.append(f"* GenerateContentRequest.{where}: {desc}\n")

    def plain(self, message: str) -> None:
        self.errors.append(message)

    def dict_at(self, value: Any, where: str, typename: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.bad_value(where, typename, value)
        return None

    def list_at(self, value: Any, where: str, typename: str) -> list[Any] | None:
        if isinstance(value, list):
            return value
        self.bad_value(where, typename, value)
        return None

    def raise_if_any(self) -> None:
        if self.parse_errors:
            raise GeminiInvalid("\n".join(d for _, d in self.parse_errors),
                                [{"field": f, "description": d} for f, d in self.parse_errors])
        if self.errors:
            plain = [e for e in self.errors if not e.startswith("* ")]
            raise GeminiInvalid(plain[0] if plain else "".join(self.errors))


def _validate_part(v: _Validator, raw: Any, where: str) -> dict[str, Any] | None:
    part = v.dict_at(raw, where, PROTO + "Part")
    if part is None:
        return None
    p = v.known(part, PART_KEYS, where)
    data = [k for k in PART_DATA if k in p]
    if not data:
        v.fail(f"{where}.data", "required oneof field 'data' must have one initialized field")
    elif len(data) > 1:
        v.parse_errors.append((where, f"Invalid JSON payload received. Invalid value at '{where}' (oneof), "
                                      f"oneof field 'data' is already set. Cannot set '{data[1]}'"))
    if "text" in p and not isinstance(p["text"], str):
        v.bad_value(f"{where}.text", "TYPE_STRING", p["text"])
    if "thought" in p and not isinstance(p["thought"], bool):
        v.bad_value(f"{where}.thought", "TYPE_BOOL", p["thought"])
    if "thoughtSignature" in p and not (isinstance(p["thoughtSignature"], str) and _b64_ok(p["thoughtSignature"])):
        v.parse_errors.append((f"{where}.thought_signature", "Invalid JSON payload received. Invalid value at "
                               f"'{where}.thought_signature' (TYPE_BYTES), Base64 decoding failed for "
                               f"{_compact(p['thoughtSignature'])}"))
    for key, check in (("inlineData", _check_inline), ("fileData", _check_file),
                       ("functionCall", _check_function_call), ("functionResponse", _check_function_response)):
        if key in p:
            p[key] = check(v, p[key], f"{where}.{_snake(key)}")
    return p


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


def _check_inline(v: _Validator, raw: Any, where: str) -> Any:
    d = v.dict_at(raw, where, PROTO + "Blob")
    if d is None:
        return raw
    d = v.known(d, frozenset({"mimeType", "data"}), where)
    if not d.get("mimeType"):
        v.fail(f"{where}.mime_type", "mime_type must not be empty")
    if not isinstance(d.get("data"), str) or not _b64_ok(d["data"]):
        v.parse_errors.append((f"{where}.data", f"Invalid JSON payload received. Invalid value at "
                                                f"'{where}.data' (TYPE_BYTES), Base64 decoding failed"))
    return d


def _check_file(v: _Validator, raw: Any, where: str) -> Any:
    d = v.dict_at(raw, where, PROTO + "FileData")
    if d is None:
        return raw
    d = v.known(d, frozenset({"mimeType", "fileUri"}), where)
    if not d.get("fileUri"):
        v.fail(f"{where}.file_uri", "file_uri must not be empty")
    return d


def _check_function_call(v: _Validator, raw: Any, where: str) -> Any:
    d = v.dict_at(raw, where, PROTO + "FunctionCall")
    if d is None:
        return raw
    d = v.known(d, frozenset({"id", "name", "args"}), where)
    if not isinstance(d.get("name"), str) or not d["name"]:
        v.fail(f"{where}.name", "Name cannot be empty.")
    if "args" in d and not isinstance(d["args"], dict):
        v.bad_value(f"{where}.args", "type.googleapis.com/google.protobuf.Struct", d["args"])
    return d


def _check_function_response(v: _Validator, raw: Any, where: str) -> Any:
    d = v.dict_at(raw, where, PROTO + "FunctionResponse")
    if d is None:
        return raw
    d = v.known(d, frozenset({"id", "name", "response", "willContinue", "scheduling", "parts"}), where)
    if not isinstance(d.get("name"), str) or not d["name"]:
        v.fail(f"{where}.name", "Name cannot be empty.")
    if "response" not in d:
        v.fail(f"{where}.response", "response must be specified")
    elif not isinstance(d["response"], dict):
        v.bad_value(f"{where}.response", "type.googleapis.com/google.protobuf.Struct", d["response"])
    return d


def _validate_content(v: _Validator, raw: Any, where: str, system: bool = False) -> dict[str, Any] | None:
    c = v.dict_at(raw, where, PROTO + "Content")
    if c is None:
        return None
    c = v.known(c, CONTENT_KEYS, where)
    role = c.get("role", "" if system else "user")
    if not system and role not in ("user", "model"):
        v.plain("Please use a valid role: user, model.")
    parts_raw = c.get("parts")
    parts: list[dict[str, Any]] = []
    if parts_raw is None or parts_raw == []:
        v.fail(f"{where}.parts", "contents.parts must not be empty.")
    elif v.list_at(parts_raw, f"{where}.parts", PROTO + "Part") is not None:
        for j, part in enumerate(parts_raw):
            norm = _validate_part(v, part, f"{where}.parts[{j}]")
            if norm is not None:
                parts.append(norm)
    return {"role": role, "parts": parts}


def _validate_schema(v: _Validator, raw: Any, where: str) -> None:
    """The OpenAPI-subset ``Schema`` proto: anything outside SCHEMA_KEYS is an unknown field."""
    s = v.dict_at(raw, where, PROTO + "Schema")
    if s is None:
        return
    s = v.known(s, SCHEMA_KEYS, where)
    t = s.get("type")
    if t is not None and (not isinstance(t, str) or t.upper() not in SCHEMA_TYPES):
        v.bad_value(f"{where}.type", PROTO + "Type", t)
    props = s.get("properties")
    if props is not None and v.dict_at(props, f"{where}.properties", PROTO + "Schema") is not None:
        for i, sub in enumerate(props.values()):
            _validate_schema(v, sub, f"{where}.properties[{i}].value")  # proto map path style
    if "items" in s:
        _validate_schema(v, s["items"], f"{where}.items")
    if "anyOf" in s and v.list_at(s["anyOf"], f"{where}.any_of", PROTO + "Schema") is not None:
        for i, sub in enumerate(s["anyOf"]):
            _validate_schema(v, sub, f"{where}.any_of[{i}]")
    if "enum" in s and v.list_at(s["enum"], f"{where}.enum", "TYPE_STRING") is not None:
        for i, item in enumerate(s["enum"]):
            if not isinstance(item, str):
                v.bad_value(f"{where}.enum[{i}]", "TYPE_STRING", item)
    if "required" in s and v.list_at(s["required"], f"{where}.required", "TYPE_STRING") is not None:
        names = props if isinstance(props, dict) else {}
        for i, name in enumerate(s["required"]):
            if name not in names:
                v.fail(f"{where}.required[{i}]", "property is not defined")


def _validate_tools(v: _Validator, raw: Any) -> set[str]:
    declared: set[str] = set()
    if v.list_at(raw, "tools", PROTO + "Tool") is None:
        return declared
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if v.dict_at(tool, where, PROTO + "Tool") is None:
            continue
        t = v.known(tool, TOOL_KEYS, where)
        decls = t.get("functionDeclarations")
        if decls is None or v.list_at(decls, f"{where}.function_declarations", PROTO + "FunctionDeclaration") is None:
            continue
        for j, decl in enumerate(decls):
            _validate_declaration(v, decl, f"{where}.function_declarations[{j}]", declared)
    return declared


def _validate_declaration(v: _Validator, raw: Any, where: str, declared: set[str]) -> None:
    if v.dict_at(raw, where, PROTO + "FunctionDeclaration") is None:
        return
    d = v.known(raw, FDECL_KEYS, where)
    name = d.get("name")
    if not isinstance(name, str) or not FUNC_NAME.match(name):
        v.fail(f"{where}.name", "Invalid function name. Must start with a letter or an underscore. Must be "
                                "alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes (-), "
                                "with a maximum length of 64.")
    elif name in declared:
        v.fail(f"{where}.name", f"Duplicate function declaration found: {name}")
    else:
        declared.add(name)
    if "parameters" in d and "parametersJsonSchema" in d:
        v.fail(f"{where}.parameters", "parameters and parameters_json_schema cannot both be set.")
    if "parameters" in d:
        _validate_schema(v, d["parameters"], f"{where}.parameters")
    if "response" in d:
        _validate_schema(v, d["response"], f"{where}.response")


def _validate_tool_config(v: _Validator, raw: Any) -> str:
    if v.dict_at(raw, "tool_config", PROTO + "ToolConfig") is None:
        return "AUTO"
    tc = v.known(raw, frozenset({"functionCallingConfig", "retrievalConfig"}), "tool_config")
    fcc = tc.get("functionCallingConfig")
    where = "tool_config.function_calling_config"
    if fcc is None or v.dict_at(fcc, where, PROTO + "FunctionCallingConfig") is None:
        return "AUTO"
    fcc = v.known(fcc, frozenset({"mode", "allowedFunctionNames"}), where)
    mode = fcc.get("mode", "AUTO")
    if mode not in FC_MODES:
        v.bad_value(f"{where}.mode", PROTO + "FunctionCallingConfig.Mode", mode)
    if fcc.get("allowedFunctionNames") and mode not in ("ANY", "VALIDATED"):
        v.fail(f"{where}.allowed_function_names", "allowed_function_names should only be set when the mode is ANY.")
    return mode if isinstance(mode, str) else "AUTO"


def _validate_generation_config(v: _Validator, raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    where = "generation_config"
    if v.dict_at(raw, where, PROTO + "GenerationConfig") is None:
        return {}, {}
    g = v.known(raw, GEN_KEYS, where)
    for key in ("temperature", "topP", "presencePenalty", "frequencyPenalty"):
        if key in g and (isinstance(g[key], bool) or not isinstance(g[key], (int, float))):
            v.bad_value(f"{where}.{_snake(key)}", "TYPE_FLOAT", g[key])
    for key in ("topK", "maxOutputTokens", "candidateCount", "seed"):
        if key in g and (isinstance(g[key], bool) or not isinstance(g[key], int)):
            v.bad_value(f"{where}.{_snake(key)}", "TYPE_INT32", g[key])
    if "stopSequences" in g and v.list_at(g["stopSequences"], f"{where}.stop_sequences", "TYPE_STRING") is not None:
        if not all(isinstance(s, str) for s in g["stopSequences"]):
            v.bad_value(f"{where}.stop_sequences", "TYPE_STRING", g["stopSequences"])
    if "responseMimeType" in g and g["responseMimeType"] not in MIME_TYPES:
        v.fail(f"{where}.response_mime_type", "allowed mimetypes are `text/plain`, `application/json`, "
                                              "`application/xml`, `application/yaml` and `text/x.enum`.")
    if "responseSchema" in g:
        if "responseJsonSchema" in g:
            v.fail(f"{where}.response_schema", "response_schema and response_json_schema cannot both be set.")
        _validate_schema(v, g["responseSchema"], f"{where}.response_schema")
    thinking: dict[str, Any] = {}
    if "thinkingConfig" in g and v.dict_at(g["thinkingConfig"], f"{where}.thinking_config",
                                           PROTO + "ThinkingConfig") is not None:
        thinking = v.known(g["thinkingConfig"], THINKING_KEYS, f"{where}.thinking_config")
        level = thinking.get("thinkingLevel")
        if level is not None and (not isinstance(level, str)
                                  or level.upper() not in {"LOW", "MEDIUM", "HIGH", "MINIMAL",
                                                           "THINKING_LEVEL_UNSPECIFIED"}):
            v.bad_value(f"{where}.thinking_config.thinking_level", PROTO + "ThinkingConfig.ThinkingLevel", level)
    cc = g.get("candidateCount")
    if isinstance(cc, int) and not isinstance(cc, bool) and not 1 <= cc <= 8:
        v.fail(f"{where}.candidate_count", "candidate_count must be between 1 and 8.")
    return g, thinking


def _fc_count(content: dict[str, Any]) -> int:
    return sum(1 for p in content["parts"] if "functionCall" in p)


def _fr_count(content: dict[str, Any]) -> int:
    return sum(1 for p in content["parts"] if "functionResponse" in p)


def _check_turns(contents: list[dict[str, Any]]) -> None:
    """Gemini's function-calling turn rules (checked after the shape is known-good)."""
    for i, content in enumerate(contents):
        prev = contents[i - 1] if i else None
        calls = _fc_count(content)
        if content["role"] == "model" and calls:
            if prev is None or prev["role"] != "user":
                raise GeminiInvalid("Please ensure that function call turn comes immediately after a user turn "
                                    "or after a function response turn.")
            nxt = contents[i + 1] if i + 1 < len(contents) else None
            if nxt is not None and nxt["role"] == "user" and _fr_count(nxt) != calls:
                raise GeminiInvalid("Please ensure that the number of function response parts is equal to the "
                                    "number of function call parts of the function call turn.")
        if content["role"] == "user" and _fr_count(content):
            if prev is None or prev["role"] != "model" or not _fc_count(prev):
                raise GeminiInvalid("Please ensure that function response turn comes immediately after a "
                                    "function call turn.")


def _check_signatures(contents: list[dict[str, Any]], state: EmulatorState) -> None:
    """Gemini 3: the first functionCall of each model turn must echo a signature we issued."""
    start = 0
    if state.signature_scope == "turn":
        # The "current turn" starts at the last user message that carries text (not tool results).
        for i, content in enumerate(contents):
            if content["role"] == "user" and any("text" in p for p in content["parts"]):
                start = i
    for pos, content in enumerate(contents[start:], start=start):
        if content["role"] != "model":
            continue
        first = next((p for p in content["parts"] if "functionCall" in p), None)
        if first is None:
            continue
        sig = first.get("thoughtSignature")
        name = first["functionCall"].get("name")
        if not sig:
            raise GeminiInvalid(
                "Function call is missing a thought_signature in functionCall parts. This is required for tools "
                "to work correctly, and missing thought_signature may lead to degraded model performance. "
                f"Additional data, function call `default_api:{name}` , position {pos + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")
        if sig not in state.signatures and sig not in MAGIC_SIGNATURES:
            raise GeminiInvalid("Unable to submit request because Thought signature is not valid.")


def validate_generate_request(body: Any, model: str, state: EmulatorState) -> GenRequest:
    """Validate a GenerateContentRequest like the real API; raise GeminiInvalid on the first problem set."""
    v = _Validator()
    if not isinstance(body, dict):
        raise GeminiInvalid("Invalid JSON payload received. Expected an object.")
    top = v.known(body, TOP_KEYS, "")
    contents: list[dict[str, Any]] = []
    raw_contents = top.get("contents")
    if not raw_contents:
        v.fail("contents", "contents is not specified")
    elif v.list_at(raw_contents, "contents", PROTO + "Content") is not None:
        for i, c in enumerate(raw_contents):
            norm = _validate_content(v, c, f"contents[{i}]")
            if norm is not None:
                contents.append(norm)
    system_text = ""
    if top.get("systemInstruction") is not None:
        si = _validate_content(v, top["systemInstruction"], "system_instruction", system=True)
        system_text = " ".join(p["text"] for p in (si or {}).get("parts", []) if isinstance(p.get("text"), str))
    declared = _validate_tools(v, top["tools"]) if top.get("tools") is not None else set()
    fc_mode = _validate_tool_config(v, top["toolConfig"]) if top.get("toolConfig") is not None else "AUTO"
    config, thinking = (_validate_generation_config(v, top["generationConfig"])
                        if top.get("generationConfig") is not None else ({}, {}))
    v.raise_if_any()
    _check_turns(contents)
    if model.startswith("gemini-3"):
        _check_signatures(contents, state)
    return GenRequest(contents, system_text, declared, fc_mode, config, thinking)


# --------------------------------------------------------------------------------------
# Gemini response building
# --------------------------------------------------------------------------------------


def _request_words(req: GenRequest) -> int:
    n = _words(req.system_text)
    for content in req.contents:
        for p in content["parts"]:
            if isinstance(p.get("text"), str):
                n += _words(p["text"])
            elif "functionCall" in p:
                n += _words(_compact(p["functionCall"]))
            elif "functionResponse" in p:
                n += _words(_compact(p["functionResponse"]))
    return n


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
    ans = apply_limits(ans, req.config.get("maxOutputTokens"), req.config.get("stopSequences") or [])
    return _answers(ans, req.config.get("candidateCount") or 1)


def _fc_parts(calls: list[dict[str, Any]], signature: str | None) -> list[dict[str, Any]]:
    parts = [{"functionCall": {"name": c["name"], "args": c.get("args") or {}}} for c in calls]
    if parts and signature:
        parts[0]["thoughtSignature"] = signature
    return parts


def _gemini_chunks(ans: Answer, signature: str | None, stream: bool) -> list[list[dict[str, Any]]]:
    """The answer as a list of part-lists: one per SSE event when streaming, flattened otherwise."""
    chunks: list[list[dict[str, Any]]] = []
    if ans.thought:
        chunks.append([{"text": ans.thought, "thought": True}])
    if stream:
        chunks.extend([{"text": piece}] for piece in ans.text_chunks())
    elif ans.text:
        chunks.append([{"text": ans.text}])
    if ans.function_calls:
        chunks.append(_fc_parts(ans.function_calls, signature))  # a functionCall is never split
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
                thought += _words(p["text"])
            else:
                cand += _words(p["text"])
        elif "functionCall" in p:
            cand += _words(_compact(p["functionCall"]))
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
                  stream: bool) -> list[dict[str, Any]]:
    """GenerateContentResponse objects: exactly one unless streaming.

    Streaming: each event carries only new parts, cumulative usage, and finishReason on the
    last event only (for every candidate).
    """
    signed = model.startswith("gemini-3")
    per_cand = [_gemini_chunks(a, state.issue_signature() if signed and a.function_calls else None, stream)
                for a in answers]
    if not stream:
        per_cand = [[[p for chunk in chunks for p in chunk]] for chunks in per_cand]
    n_events = max(len(c) for c in per_cand)
    rid = secrets.token_urlsafe(16)[:22]
    cand_words = thought_words = 0
    events = []
    for k in range(n_events):
        last = k == n_events - 1
        candidates = []
        for i, chunks in enumerate(per_cand):
            if k >= len(chunks) and not last:
                continue
            parts = chunks[k] if k < len(chunks) else []
            c, t = _part_words(parts)
            cand_words, thought_words = cand_words + c, thought_words + t
            cand: dict[str, Any] = {"content": _content(parts)}
            if last:
                cand["finishReason"] = answers[i].finish
            cand["index"] = i
            candidates.append(cand)
        events.append({"candidates": candidates, "usageMetadata": _usage(prompt, cand_words, thought_words, last),
                       "modelVersion": model, "responseId": rid})
    return events


def _sse_google(obj: Any) -> bytes:
    # Google frames SSE events with CRLF; parsers that only split on "\n\n" break here.
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\r\n\r\n"


def _strip_finish(event: dict[str, Any]) -> None:
    for cand in event.get("candidates", []):
        cand.pop("finishReason", None)


async def respond_generate(call: Call, req: GenRequest, model: str, stream: bool, sse: bool,
                           wrap: bool) -> web.StreamResponse:
    """Shared by the Gemini API and Cloud Code (``wrap`` adds the v1internal envelope)."""
    answers = gemini_answer(req, model, call.reply)
    events = gemini_events(answers, model, _request_words(req), call.state, stream)
    trace = _rand_id(8)

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


# --------------------------------------------------------------------------------------
# Gemini API handlers
# --------------------------------------------------------------------------------------


def _gemini_model_ok(model: str) -> bool:
    return model.startswith(("gemini-", "gemma-"))


def _gemini_model_info(name: str) -> dict[str, Any]:
    return {"name": f"models/{name}", "version": "001",
            "displayName": name.replace("-", " ").title(),
            "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]}


def _gemini_key(request: web.Request) -> str | None:
    return request.headers.get("x-goog-api-key") or request.query.get("key")


def _gemini_auth(key: str | None) -> web.Response | None:
    if not key:
        return error_response("gemini", 403, "Method doesn't allow unregistered callers (callers without "
                                   "established identity). Please use API Key or other form of API consumer "
                                   "identity to call this API.")
    if key.startswith("bad"):
        return error_response("gemini", 401, "API key not valid. Please pass a valid API key.",
                                   details=[{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                             "reason": "API_KEY_INVALID", "domain": "googleapis.com"}])
    return None


async def gemini_generate(request: web.Request) -> web.StreamResponse:
    model, _, method = request.match_info["target"].partition(":")
    body, parsed = await _read_body(request)
    key = _gemini_key(request)
    call, early = await begin(request, "gemini", body, key, model)
    if early is not None:
        return early
    auth_error = _gemini_auth(key)
    if auth_error is not None:
        return auth_error
    if method not in ("generateContent", "streamGenerateContent", "countTokens") or not _gemini_model_ok(model):
        return error_response("gemini", 404, f"models/{model} is not found for API version v1beta, or is not "
                              f"supported for {method}. Call ListModels to see the list of available models "
                              "and their supported methods.")
    if not parsed:
        return error_response("gemini", 400, "Invalid JSON payload received. Unexpected token.")
    if method == "countTokens":
        return _count_tokens(body, model, call.state)
    try:
        req = validate_generate_request(body, model, call.state)
    except GeminiInvalid as exc:
        return error_response("gemini", 400, exc.message, details=exc.details)
    stream = method == "streamGenerateContent"
    return await respond_generate(call, req, model, stream, request.query.get("alt") == "sse", wrap=False)


def _count_tokens(body: Any, model: str, state: EmulatorState) -> web.Response:
    inner = body.get("generateContentRequest", body) if isinstance(body, dict) else body
    try:
        req = validate_generate_request(inner, model, state)
    except GeminiInvalid as exc:
        return error_response("gemini", 400, exc.message, details=exc.details)
    return web.json_response({"totalTokens": _request_words(req)})


async def gemini_models(request: web.Request) -> web.StreamResponse:
    body, _ = await _read_body(request)
    key = _gemini_key(request)
    _, early = await begin(request, "gemini", body, key, None)
    if early is not None:
        return early
    auth_error = _gemini_auth(key)
    if auth_error is not None:
        return auth_error
    return web.json_response({"models": [_gemini_model_info(m) for m in GEMINI_MODELS]})


async def gemini_model_get(request: web.Request) -> web.StreamResponse:
    name = request.match_info["target"]
    key = _gemini_key(request)
    _, early = await begin(request, "gemini", None, key, name)
    if early is not None:
        return early
    auth_error = _gemini_auth(key)
    if auth_error is not None:
        return auth_error
    if name not in GEMINI_MODELS:
        return error_response("gemini", 404, f"models/{name} is not found for API version v1beta.")
    return web.json_response(_gemini_model_info(name))


# --------------------------------------------------------------------------------------
# Cloud Code (v1internal) handlers
# --------------------------------------------------------------------------------------


def _cloudcode_unauthenticated() -> web.Response:
    # Auth failures come from Google's front end, so they are a plain object, not an array.
    return web.json_response(google_error_body(401, GOOGLE_MESSAGES[401]), status=401)


async def cloudcode_generate(request: web.Request) -> web.StreamResponse:
    stream = request.path.endswith(":streamGenerateContent")
    body, parsed = await _read_body(request)
    token = _bearer(request)
    model = body.get("model") if isinstance(body, dict) else None
    call, early = await begin(request, "cloudcode", body, token, model)
    if early is not None:
        return early
    if not call.state.token_valid(token):
        return _cloudcode_unauthenticated()
    if not parsed or not isinstance(body, dict):
        return error_response("cloudcode", 400, "Invalid JSON payload received. Unexpected token.")
    if not isinstance(model, str) or not model:
        return error_response("cloudcode", 400, "* CaGenerateContentRequest.model: model is required\n")
    if not body.get("project"):
        return error_response("cloudcode", 400, "* CaGenerateContentRequest.project: project is required\n")
    if not _gemini_model_ok(model):
        return error_response("cloudcode", 404, f"Requested entity was not found: model {model}.")
    try:
        req = validate_generate_request(body.get("request"), model, call.state)
    except GeminiInvalid as exc:
        return error_response("cloudcode", 400, exc.message, details=exc.details)
    return await respond_generate(call, req, model, stream, request.query.get("alt") == "sse", wrap=True)


async def cloudcode_load(request: web.Request) -> web.StreamResponse:
    body, _ = await _read_body(request)
    token = _bearer(request)
    call, early = await begin(request, "cloudcode", body, token, None)
    if early is not None:
        return early
    if not call.state.token_valid(token):
        return _cloudcode_unauthenticated()
    return web.json_response({"cloudaicompanionProject": "emulated-project",
                              "currentTier": {"id": "free-tier", "name": "Emulated"}})


# --------------------------------------------------------------------------------------
# OAuth token endpoint
# --------------------------------------------------------------------------------------


async def oauth_token(request: web.Request) -> web.StreamResponse:
    body, _ = await _read_body(request)
    form = body if isinstance(body, dict) else {}
    refresh_token = form.get("refresh_token")
    state = request.app[STATE]
    if refresh_token:
        state.refreshes[refresh_token] += 1  # counted on arrival so races are visible even if the reply fails
    _, early = await begin(request, "oauth", body, refresh_token, None)
    if early is not None:
        return early
    if state.refresh_delay_ms:
        await asyncio.sleep(state.refresh_delay_ms / 1000)
    if form.get("grant_type") != "refresh_token":
        return web.json_response({"error": "unsupported_grant_type",
                                  "error_description": f"Invalid grant_type: {form.get('grant_type') or ''}"},
                                 status=400)
    if not form.get("client_id") and not request.headers.get("Authorization", "").lower().startswith("basic "):
        return web.json_response({"error": "invalid_request",
                                  "error_description": "Could not determine client ID from request."}, status=400)
    if not refresh_token:
        return web.json_response({"error": "invalid_request", "error_description": "Missing required parameter: "
                                  "refresh_token"}, status=400)
    if refresh_token.startswith("revoked"):
        return web.json_response({"error": "invalid_grant",
                                  "error_description": "Token has been expired or revoked."}, status=400)
    return web.json_response({
        "access_token": state.issue_token(),
        "expires_in": state.token_ttl,
        "token_type": "Bearer",
        "scope": "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email "
                 "https://www.googleapis.com/auth/userinfo.profile openid",
    })


# --------------------------------------------------------------------------------------
# OpenAI-compatible server
# --------------------------------------------------------------------------------------

OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def _openai_auth(key: str | None) -> web.Response | None:
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


def _openai_validate(body: Any) -> tuple[str, str | None] | None:
    """(message, param) for the first problem, or None. Mirrors OpenAI's tool-call sequencing rules."""
    if not isinstance(body, dict):
        return "We could not parse the JSON body of your request.", None
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter", None
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return "[] is too short - 'messages'", "messages"
    pending: set[str] = set()  # tool_call ids still waiting for a tool message
    for i, m in enumerate(msgs):
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
    return _answers(ans, body.get("n") or 1)


def _openai_finish(ans: Answer) -> str:
    if ans.function_calls and ans.finish == "STOP":
        return "tool_calls"
    return GEMINI_TO_OPENAI_FINISH.get(ans.finish, ans.finish.lower())


def _tool_calls(ans: Answer) -> list[dict[str, Any]]:
    return [{"id": f"call_{_rand_id(12)}", "type": "function",
             "function": {"name": c["name"], "arguments": _compact(c.get("args") or {})}}
            for c in ans.function_calls]


def _openai_usage(prompt: int, answers: list[Answer]) -> dict[str, int]:
    completion = sum(_words(a.text) + sum(_words(_compact(c)) for c in a.function_calls) for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _openai_prompt_words(body: dict[str, Any]) -> int:
    return sum(_words(_openai_text(m.get("content"))) for m in body["messages"])


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
    return {"id": f"chatcmpl-{_rand_id(12)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": choices,
            "usage": _openai_usage(_openai_prompt_words(body), answers), "system_fingerprint": "fp_emulator"}


def _sse_openai(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"


def openai_stream_events(body: dict[str, Any], answers: list[Answer]) -> tuple[list[dict], list[dict]]:
    """(content chunks, tail chunks). The tail (finish + usage) is what a cut stream never gets."""
    cid, created = f"chatcmpl-{_rand_id(12)}", int(time.time())
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
    body, parsed = await _read_body(request)
    key = _bearer(request)
    model = body.get("model") if isinstance(body, dict) else None
    call, early = await begin(request, "openai", body, key, model)
    if early is not None:
        return early
    auth_error = _openai_auth(key)
    if auth_error is not None:
        return auth_error
    problem = _openai_validate(body) if parsed else ("We could not parse the JSON body of your request.", None)
    if problem is not None:
        return error_response("openai", 400, problem[0], param=problem[1])
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
    key = _bearer(request)
    _, early = await begin(request, "openai", None, key, None)
    if early is not None:
        return early
    auth_error = _openai_auth(key)
    if auth_error is not None:
        return auth_error
    return web.json_response({"object": "list", "data": [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "emulator"} for m in OPENAI_MODELS]})


# --------------------------------------------------------------------------------------
# Control API
# --------------------------------------------------------------------------------------


def _check_rule(rule: Any) -> str | None:
    """Reject typos early: a silently ignored rule makes for a confusing test."""
    if not isinstance(rule, dict):
        return "rule must be an object"
    unknown = set(rule) - RULE_KEYS
    if unknown:
        return f"unknown rule keys: {sorted(unknown)}"
    if set(rule.get("match") or {}) - MATCH_KEYS:
        return f"unknown match keys: {sorted(set(rule['match']) - MATCH_KEYS)}"
    if "status" in rule and "reply" in rule:
        return "a rule has at most one action (status or reply)"
    if "reply" in rule and (not isinstance(rule["reply"], dict) or set(rule["reply"]) - REPLY_KEYS):
        return f"reply must be an object with keys from {sorted(REPLY_KEYS)}"
    for key in ("times", "status", "cut_after"):
        if key in rule and (not isinstance(rule[key], int) or isinstance(rule[key], bool) or rule[key] < 0):
            return f"{key} must be a non-negative integer"
    for key in ("delay_ms", "chunk_delay_ms"):
        if key in rule and (not isinstance(rule[key], (int, float)) or rule[key] < 0):
            return f"{key} must be a non-negative number"
    return None


async def control_rules(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "GET":
        return web.json_response({"rules": state.rules})
    body, parsed = await _read_body(request)
    rules = body.get("rules") if isinstance(body, dict) else None
    if not parsed or not isinstance(rules, list):
        return web.json_response({"error": 'expected {"rules": [...]}'}, status=400)
    for rule in rules:
        problem = _check_rule(rule)
        if problem:
            return web.json_response({"error": problem, "rule": rule}, status=400)
    # Copy: consuming `times` must not mutate the caller's objects (in-process tests).
    state.rules.extend(json.loads(json.dumps(r)) for r in rules if r.get("times") is None or r["times"] > 0)
    return web.json_response({"rules": len(state.rules)})


async def control_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"ok": True})


async def control_log(request: web.Request) -> web.Response:
    return web.json_response({"requests": list(request.app[STATE].log)})


async def control_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"refreshes": dict(state.refreshes), "requests": state.requests,
                              "aborted_streams": state.aborted_streams,
                              "rules": len(state.rules), "tokens_issued": len(state.access_tokens)})


async def control_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body, _ = await _read_body(request)
    if not isinstance(body, dict) or set(body) - CONFIG_KEYS:
        return web.json_response({"error": f"config keys: {sorted(CONFIG_KEYS)}"}, status=400)
    if body.get("signature_scope", "turn") not in ("turn", "all"):
        return web.json_response({"error": 'signature_scope must be "turn" or "all"'}, status=400)
    if not all(isinstance(body.get(k, 0), (int, float)) and body.get(k, 0) >= 0
               for k in ("token_ttl", "refresh_delay_ms")):
        return web.json_response({"error": "token_ttl and refresh_delay_ms must be non-negative numbers"},
                                 status=400)
    for key, value in body.items():
        setattr(state, key, value)
    return web.json_response({k: getattr(state, k) for k in sorted(CONFIG_KEYS)})


async def control_expire(request: web.Request) -> web.Response:
    """Expire every issued access token now (cheaper than sleeping through a short TTL)."""
    state = request.app[STATE]
    for token in state.access_tokens:
        state.access_tokens[token] = 0.0
    return web.json_response({"expired": len(state.access_tokens)})


# --------------------------------------------------------------------------------------
# App / server
# --------------------------------------------------------------------------------------


def make_app(state: EmulatorState | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)  # inline images can be large
    app[STATE] = state or EmulatorState()
    r = app.router
    r.add_get("/v1beta/models", gemini_models)
    r.add_get(r"/v1beta/models/{target:[^/:]+}", gemini_model_get)
    r.add_post(r"/v1beta/models/{target:[^/]+}", gemini_generate)
    r.add_post("/v1internal:generateContent", cloudcode_generate)
    r.add_post("/v1internal:streamGenerateContent", cloudcode_generate)
    r.add_post("/v1internal:loadCodeAssist", cloudcode_load)
    r.add_post("/token", oauth_token)
    r.add_post("/openai/v1/chat/completions", openai_chat)
    r.add_get("/openai/v1/models", openai_models)
    r.add_route("*", "/__control/rules", control_rules)
    r.add_post("/__control/reset", control_reset)
    r.add_get("/__control/log", control_log)
    r.add_get("/__control/stats", control_stats)
    r.add_post("/__control/config", control_config)
    r.add_post("/__control/expire_tokens", control_expire)
    return app


async def start(host: str = "127.0.0.1", port: int = 0,
                state: EmulatorState | None = None) -> tuple[web.AppRunner, str]:
    """Start serving in the current loop; returns (runner, base URL). Stop with ``runner.cleanup()``."""
    runner = web.AppRunner(make_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    return runner, f"http://{host}:{bound_port}"


async def _serve(host: str, port: int, port_file: str | None) -> None:
    runner, url = await start(host, port)
    if port_file:
        with open(port_file, "w") as fh:
            fh.write(url + "\n")
    print(f"EMULATOR_READY {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--port-file", help="also write the base URL here once listening")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.port_file))


if __name__ == "__main__":
    sys.exit(main())
