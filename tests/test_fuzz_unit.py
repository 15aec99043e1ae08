"""Seeded random inputs: bad input is a 4xx, never a 500; cleaned schemas always satisfy Gemini.

Deterministic (fixed seeds) so a failure reproduces; a few thousand cases, about two seconds.
"""

from __future__ import annotations

import json
import random
from typing import Any

from addon.pool.pool import AccountPool
from addon.pool.accounts_file import parse_accounts
from addon.backends import gemini
from addon.backends import openai as openai_upstream
from addon.backends.schema import response_schema, tool_parameters
from addon.engine import Engine, Fixed, Incoming, Settings
from addon.frontends import build_frontends
from addon.config.mapping import parse_mappings
from addon.protocol import canonical as c
from addon.stores.response_store import MemoryResponseStore
from tests import emulator as emu

# ---- JSON Schema junk -> tool_parameters / response_schema -> the emulator's Gemini validator -----------------

_KEYS = ["type", "properties", "items", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "enum", "const",
         "required", "additionalProperties", "format", "nullable", "minimum", "exclusiveMinimum", "description",
         "title", "default", "pattern", "minItems", "$schema", "examples", "not", "patternProperties"]
_TYPES: list[Any] = ["string", "number", "integer", "boolean", "array", "object", "null",
                     ["string", "null"], ["integer", "string"], {}, 3, ""]
_JUNK: list[Any] = [None, 1, "x", True, [], {}, 2.5, ["a", 1]]


def _junk(rnd: random.Random, depth: int) -> Any:
    r = rnd.random()
    if depth > 4 or r < 0.2:
        return rnd.choice(_JUNK)
    if r < 0.4:
        return [_junk(rnd, depth + 1) for _ in range(rnd.randrange(3))]
    return _schema(rnd, depth + 1)


def _schema(rnd: random.Random, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(rnd.randrange(5)):
        key = rnd.choice(_KEYS)
        if key == "type":
            out[key] = rnd.choice(_TYPES)
        elif key == "properties":
            out[key] = {f"p{i}": _schema(rnd, depth + 1) if rnd.random() < 0.8 else _junk(rnd, depth + 1)
                        for i in range(rnd.randrange(4))}
        elif key in ("items", "not"):
            out[key] = _schema(rnd, depth + 1)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_schema(rnd, depth + 1) for _ in range(rnd.randrange(3))]
        elif key == "$ref":
            out[key] = rnd.choice(["#/$defs/A", "#/definitions/B", "#/x", 5])
        elif key in ("$defs", "definitions"):
            out[key] = {"A": _schema(rnd, depth + 1), "B": _schema(rnd, depth + 1)}
        elif key == "enum":
            out[key] = rnd.choice([["a", "b"], [1, 2], [True], [], ["a", 1]])
        elif key == "const":
            out[key] = rnd.choice(["a", 1, None, {"x": 1}])
        elif key == "required":
            out[key] = rnd.choice([["p0"], ["p1", "zz"], "p0", [1]])
        elif key == "format":
            out[key] = rnd.choice(["date-time", "email", "int32", "float", "enum"])
        else:
            out[key] = _junk(rnd, depth + 1)
    return out


def test_cleaned_schemas_never_crash_and_gemini_accepts_them() -> None:
    rnd = random.Random(20261125)
    sent = 0
    for _ in range(3000):
        raw = {**_schema(rnd), "type": "object"}
        raw.setdefault("properties", {"q": _schema(rnd)})
        params, answer = tool_parameters(raw, "f"), response_schema(raw)
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": params}]}],
                "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": answer}}
        # raises on a 400 (the JSON Schema rules and the google-genai oracle); 3.x allows tools with JSON mode
        emu.validate_generate_request(body, "gemini-3.5-flash", emu.EmulatorState())
        sent += 1
    assert sent == 3000


# ---- mutated requests through the engine --------------------------------------------------------

_VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}, "temperature": 0.5,
        "stop": ["x"], "n": 1, "reasoning_effort": "low",
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [{"type": "text", "text": "hi"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"a": {"type": "string"}}}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}}},
    "/v1/responses": {
        "model": "gpt-4o", "instructions": "i", "stream": True, "max_output_tokens": 5,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                  {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c", "output": "o"},
                  {"type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}]}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "f"}, "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}},
    "/v1/completions": {
        "model": "gpt-3.5-turbo-instruct", "prompt": ["hi"], "max_tokens": 5, "stream": True,
        "stream_options": {"include_usage": True}, "echo": True, "n": 2, "best_of": 2, "stop": "x"},
}
_WEIRD: list[Any] = [None, True, False, 0, -1, 1.5, 1e308, "", "x", [], {}, [1], {"a": 1}, "data:",
                     "file:///etc/passwd", "\u0000", 2**70]


def _mutate(obj: Any, rnd: random.Random) -> Any:
    if isinstance(obj, dict):
        obj = dict(obj)
        if obj and rnd.random() < 0.5:
            key = rnd.choice(list(obj))
            r = rnd.random()
            if r < 0.3:
                del obj[key]
            elif r < 0.7:
                obj[key] = rnd.choice(_WEIRD)
            else:
                obj[key] = _mutate(obj[key], rnd)
        else:
            for key in list(obj):
                if rnd.random() < 0.3:
                    obj[key] = _mutate(obj[key], rnd)
        return obj
    if isinstance(obj, list):
        obj = list(obj)
        if obj and rnd.random() < 0.5:
            i = rnd.randrange(len(obj))
            obj[i] = _mutate(obj[i], rnd) if rnd.random() < 0.6 else rnd.choice(_WEIRD)
        return obj
    return rnd.choice(_WEIRD) if rnd.random() < 0.5 else obj


class _TranslatingProvider:
    """Stands in for the network: translates every request both ways, answers with canned events."""

    async def complete(self, acc: Any, req: c.ChatRequest, model: str) -> c.Completion:
        gemini.build_request(req, model)
        openai_upstream.build_request(req, model, stream=False)
        calls = [c.ToolCall("call_1", "f", "{}")]
        return c.Completion([c.Choice(index=i, text="t", reasoning="r", tool_calls=calls, finish_reason="tool_calls")
                             for i in range(req.n)], c.Usage(1, 2))

    async def stream(self, acc: Any, req: c.ChatRequest, model: str) -> Any:
        gemini.build_request(req, model)

        async def batches() -> Any:
            yield [c.ReasoningDelta(0, "r"), c.TextDelta(0, "a"), c.ToolCallDelta(0, 0, "", id="call_1", name="f"),
                   c.ToolCallDelta(0, 0, "{}"), c.Finish(0, "tool_calls")]
            yield [c.UsageUpdate(c.Usage(1, 2))]
        return batches()


JSON = {"content-type": "application/json"}


async def test_mutated_requests_are_4xx_or_answered_never_5xx() -> None:
    accounts = parse_accounts({"accounts": [{"provider": "gemini", "email": "a", "api_key": "k"}]})
    engine = Engine(settings=Settings(), mappings=Fixed(parse_mappings({"default": "gemini-2.5-flash"})),
                    accounts=Fixed(accounts), pool=AccountPool(), providers={"gemini": _TranslatingProvider()},
                    frontends=build_frontends(MemoryResponseStore()))
    rnd = random.Random(7)
    seen: dict[int, int] = {}
    for _ in range(3000):
        path = rnd.choice(list(_VALID))
        body = _mutate(_VALID[path], rnd)
        out = await engine.handle(Incoming("POST", path, JSON, json.dumps(body).encode(), "127.0.0.1"))
        if out.stream is not None:
            data = b"".join([chunk async for chunk in out.stream])
            assert b"internal_error" not in data, (path, body)
        assert out.status in (200, 400), (out.status, path, body, out.body[:300])
        if out.status == 400:
            error = json.loads(out.body)["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"]
        seen[out.status] = seen.get(out.status, 0) + 1
    assert seen.get(200, 0) > 500 and seen.get(400, 0) > 500
