"""Pure tests of the Anthropic Messages front end: request -> canonical -> Gemini, Gemini answer ->
Message, Gemini SSE -> Anthropic SSE, ids, errors.

Inputs and goldens: tests/fixtures/messages/request_*.json -> request_*.golden.json (the Gemini
request, also checked by the emulator's strict validator); the Gemini answers and streams of
tests/fixtures/gemini/ -> tests/fixtures/messages/{response,stream}_*.golden.json.
`UPDATE_GOLDEN=1 pytest tests/test_messages_unit.py` regenerates the goldens (review the diff).

Every Message is validated with the `anthropic` SDK's own model, and every stream is accumulated
with the SDK's accumulator, which must rebuild the same content the events announced.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from addon.backends import gemini
from addon.frontends.base import encode_stream
from addon.frontends.messages import MessagesFrontend
from addon.frontends.messages.ids import tool_id_in, tool_id_out
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError, UpstreamError
from tests import emulator as emu
from tests.golden import cases, golden, load, normalise

DIR = Path(__file__).parent / "fixtures" / "messages"
GEMINI_DIR = Path(__file__).parent / "fixtures" / "gemini"
EVENT = TypeAdapter(RawMessageStreamEvent)
_IDS = [(re.compile(r"\b(msg|toolu|srvtoolu|req)_[0-9a-f]{24}\b"), r"\1_<id>")]

# What the answers of the Gemini fixtures are rendered for: a client that asked for thinking,
# offered a function and Anthropic's web search.
BASE_REQUEST = {"model": "claude-sonnet-4-6", "max_tokens": 1024, "thinking": {"type": "adaptive"},
                "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}},
                          {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
                          {"type": "web_search_20250305", "name": "web_search"}],
                "messages": [{"role": "user", "content": "hi"}]}


def norm(obj: Any) -> Any:
    obj = normalise(obj)
    text = json.dumps(obj, ensure_ascii=False)
    for pattern, repl in _IDS:
        text = pattern.sub(repl, text)
    return json.loads(text)


def parse(body: dict[str, Any]) -> tuple[c.ChatRequest, Any]:
    return asyncio.run(MessagesFrontend().parse(body))


def err_of(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse(body)
    return info.value


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """`event: <type>` + `data: {json}` blocks; the event name must equal the payload's type."""
    text = raw.decode()
    assert text.endswith("\n\n")
    out = []
    for block in text.split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        data = json.loads(data_line.removeprefix("data: "))
        assert event_line == f"event: {data['type']}"
        out.append(data)
    return out


def check_stream_rules(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Anthropic's event order; returns the message the SDK's accumulator builds from it."""
    assert events[0]["type"] == "message_start" and events[0]["message"]["content"] == []
    kinds = [e["type"] for e in events if e["type"] != "ping"]
    if kinds[-1] == "error":
        kinds = kinds[:-1]
    else:
        assert kinds[-2:] == ["message_delta", "message_stop"]
    open_index, count = None, 0
    for e in events[1:]:
        if e["type"] == "content_block_start":
            assert open_index is None and e["index"] == count, "blocks open one after another, indexes contiguous"
            open_index = e["index"]
        elif e["type"] == "content_block_delta":
            assert e["index"] == open_index
        elif e["type"] == "content_block_stop":
            assert e["index"] == open_index
            open_index, count = None, count + 1
        elif e["type"] in ("message_delta", "message_stop"):
            assert open_index is None
    snapshot, bufs = None, {}
    for e in events:
        if e["type"] in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=EVENT.validate_python(e), current_snapshot=snapshot, json_bufs=bufs)
    return snapshot.model_dump(mode="json", exclude_none=True)


async def encode(request: dict[str, Any], upstream: list[dict[str, Any]]) -> bytes:
    front = MessagesFrontend()
    req, ctx = await front.parse(request)
    decoder = gemini.GeminiStreamDecoder()

    async def batches():
        for data in upstream:
            yield decoder.feed(json.dumps(data))
        yield decoder.finish()

    return b"".join([chunk async for chunk in encode_stream(batches(), front.encoder(req, ctx))])


# ---- request goldens ---------------------------------------------------------------------------

def test_fixtures_exist() -> None:
    assert len(cases(DIR, "request_")) >= 5


@pytest.mark.parametrize("case", cases(DIR, "request_"))
def test_request_golden(case: str) -> None:
    spec = load(DIR / f"request_{case}.json")
    req, _ = parse(spec["request"])
    body = gemini.build_request(req, spec["upstream_model"], "origin-1")
    try:  # the emulator refuses what Gemini refuses (turn pairing, schemas, thinking controls)
        emu.validate_generate_request(json.loads(json.dumps(body)), spec["upstream_model"], emu.EmulatorState())
    except emu.GeminiInvalid as exc:
        pytest.fail(f"the emulator rejects the request: {exc.message}\n{json.dumps(body, indent=1)}")
    golden(DIR / f"request_{case}.golden.json", norm(body))


def test_claude_code_request_in_detail() -> None:
    req, ctx = parse(load(DIR / "request_claude_code_tool_loop.json")["request"])
    system = [m.text() for m in req.messages if m.role == "system"]
    assert "x-anthropic-billing-header" not in "".join(system) and len(system) == 2
    assert (req.reasoning_effort, req.show_reasoning, req.max_tokens, req.stream) == ("high", True, 64000, True)
    assistant = next(m for m in req.messages if m.role == "assistant")
    assert assistant.tool_calls[0].id == "call_00112233445566778899aabb"  # toolu_ <-> call_, store key
    assert assistant.content[0].signature.key == "sig_0123456789abcdef01234567"
    tool = next(m for m in req.messages if m.role == "tool")
    assert tool.tool_call_id == assistant.tool_calls[0].id
    assert ctx.thinking and ctx.model == "claude-opus-4-8"


def test_tool_ids_swap_prefixes_both_ways() -> None:
    assert tool_id_out("call_00ff") == "toolu_00ff" and tool_id_in("toolu_00ff") == "call_00ff"
    assert tool_id_in(tool_id_out("call_abc")) == "call_abc" and tool_id_out("x1") == "x1"


@pytest.mark.parametrize("body,param,words", [
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens", "Field required"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages", "at least one"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}, "messages.0.role", "Input should"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source":
      {"type": "base64", "data": "x"}}]}]}, "messages.0.content.0.source.media_type", "Field required"),
    ({"model": "m", "max_tokens": 5, "tools": [{"type": "code_execution_20250825", "name": "code_execution"}],
      "messages": [{"role": "user", "content": "x"}]}, "tools.0.type", "code_execution_20250825"),
    ({"model": "m", "max_tokens": 5, "tools": [{"name": "f"}], "messages": [{"role": "user", "content": "x"}]},
     "tools.0.input_schema", "Field required"),
    ({"model": "m", "max_tokens": 5, "tool_choice": {"type": "tool", "name": "nope"},
      "messages": [{"role": "user", "content": "x"}]}, "tool_choice.name", "nope"),
    ({"model": "m", "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 4000},
      "messages": [{"role": "user", "content": "x"}]}, "max_tokens", "budget_tokens"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source":
      {"type": "url", "url": "file:///etc/passwd"}}]}]}, "messages.0.content.0.source.url", "http"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source":
      {"type": "file", "file_id": "file_1"}}]}]}, "messages.0.content.0.source", "Files API"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "container_upload",
      "file_id": "f"}]}]}, "messages.0.content.0.type", "container_upload"),
])
def test_bad_requests_are_400s_naming_the_field(body: dict[str, Any], param: str, words: str) -> None:
    err = err_of(body)
    assert err.status == 400 and err.param == param and words in err.message, (err.param, err.message)


def test_error_shape_and_statuses() -> None:
    front = MessagesFrontend()
    for status, kind, out in [(400, "invalid_request_error", 400), (401, "authentication_error", 401),
                              (403, "permission_error", 403), (404, "not_found_error", 404),
                              (413, "request_too_large", 413), (429, "rate_limit_error", 429),
                              (500, "api_error", 500), (502, "api_error", 502), (503, "overloaded_error", 529),
                              (529, "overloaded_error", 529)]:
        answer = front.error(GatewayError(status, "nope", headers={"retry-after": "7"}))
        got, headers, data = answer.status, answer.headers, json.loads(answer.body)
        assert got == out and data["type"] == "error" and data["error"] == {"type": kind, "message": "nope"}
        assert headers["request-id"] == data["request_id"] and data["request_id"].startswith("req_")
        assert headers["retry-after"] == "7"
    assert front.owns("/v1/messages") and front.owns("/v1/messages/count_tokens") and front.owns("/messages")
    assert not front.owns("/v1/chat/completions") and not front.owns("/v1/messagesx")


# ---- answers -----------------------------------------------------------------------------------

RESPONSE_CASES = [n for n in cases(GEMINI_DIR, "response_") if n not in ("two_candidates", "legacy_function_call")]


@pytest.mark.parametrize("case", RESPONSE_CASES)
def test_response_golden(case: str) -> None:
    spec = load(GEMINI_DIR / f"response_{case}.json")
    front = MessagesFrontend()
    req, ctx = parse(BASE_REQUEST)
    obj = front.render(gemini.completion_from(spec["response"], 1), req, ctx)
    parsed = Message.model_validate(obj)  # the SDK's own model
    assert parsed.model_dump(mode="json", exclude_unset=True) == obj, "the SDK keeps every field"
    assert obj["stop_reason"] in ("end_turn", "max_tokens", "tool_use", "refusal")
    golden(DIR / f"response_{case}.golden.json", norm(obj))


def test_answers_map_finish_reasons_and_usage() -> None:
    req, ctx = parse(BASE_REQUEST)
    done = {case: MessagesFrontend().render(gemini.completion_from(load(GEMINI_DIR / f"response_{case}.json")
                                                                   ["response"], 1), req, ctx)
            for case in ("tool_calls", "max_tokens", "safety", "blocked_prompt", "text_with_thoughts")}
    assert done["tool_calls"]["stop_reason"] == "tool_use"
    assert all(b["id"].startswith("toolu_") for b in done["tool_calls"]["content"] if b["type"] == "tool_use")
    assert done["max_tokens"]["stop_reason"] == "max_tokens"
    assert done["safety"]["stop_reason"] == "refusal" and done["blocked_prompt"]["stop_reason"] == "refusal"
    thoughts = done["text_with_thoughts"]
    assert thoughts["content"][0]["type"] == "thinking" and thoughts["content"][0]["thinking"]
    usage = MessagesFrontend().render(c.Completion([c.Choice(text="x")], c.Usage(100, 20, 5, 60)), req, ctx)["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["output_tokens"]) == (40, 60, 20)


# ---- streams -----------------------------------------------------------------------------------

STREAM_CASES = [n for n in cases(GEMINI_DIR, "stream_") if n not in ("legacy_function_call",)]


@pytest.mark.parametrize("case", STREAM_CASES)
async def test_stream_golden(case: str) -> None:
    spec = load(GEMINI_DIR / f"stream_{case}.json")
    events = parse_sse(await encode(BASE_REQUEST, spec["events"]))
    final = check_stream_rules(events)
    if events[-1]["type"] == "message_stop":
        assert final["stop_reason"] in ("end_turn", "max_tokens", "tool_use", "refusal")
    golden(DIR / f"stream_{case}.golden.json", norm(events))


async def test_stream_tool_calls_accumulate_like_the_sdk() -> None:
    events = parse_sse(await encode(BASE_REQUEST, load(GEMINI_DIR / "stream_tool_calls.json")["events"]))
    final = check_stream_rules(events)
    calls = [(b["name"], b["input"]) for b in final["content"] if b["type"] == "tool_use"]
    assert calls == [("get_weather", {"city": "Paris", "days": [1, 2]}), ("get_weather", {"city": "Oslo"}),
                     ("get_time", {})]
    assert final["stop_reason"] == "tool_use" and events[1]["type"] == "ping"


async def test_stream_grounding_cites_and_reports_the_search() -> None:
    events = parse_sse(await encode(BASE_REQUEST, load(GEMINI_DIR / "stream_grounding.json")["events"]))
    final = check_stream_rules(events)
    kinds = [b["type"] for b in final["content"]]
    assert kinds[-2:] == ["server_tool_use", "web_search_tool_result"] and "text" in kinds
    text = next(b for b in final["content"] if b["type"] == "text")
    assert text["citations"] and all(x["cited_text"] in text["text"] for x in text["citations"])
    assert final["usage"]["server_tool_use"]["web_search_requests"] >= 1


async def test_upstream_failure_mid_stream_is_an_error_event() -> None:
    events = parse_sse(await encode(BASE_REQUEST, load(GEMINI_DIR / "stream_error_event.json")["events"]))
    assert events[-1] == {"type": "error", "error": {"type": "api_error", "message": events[-1]["error"]["message"]}}
    assert "overloaded" in events[-1]["error"]["message"] and "message_stop" not in [e["type"] for e in events]
    events = parse_sse(await encode(BASE_REQUEST, load(GEMINI_DIR / "stream_incomplete.json")["events"]))
    assert events[-1]["type"] == "error"


def test_encoder_fail_uses_the_status_type() -> None:
    front = MessagesFrontend()
    req, ctx = parse(BASE_REQUEST)
    enc = front.encoder(req, ctx)
    enc.start()
    raw = enc.fail(GatewayError(429, "slow down"))
    assert parse_sse(raw) == [{"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}]
    assert isinstance(UpstreamError(503, "x"), Exception)


# ---- count_tokens ------------------------------------------------------------------------------

def test_count_request_for_each_google_upstream() -> None:
    from addon.backends import openai as openai_wire
    from addon.backends.gemini.count import count_request, total_tokens

    req, _ = parse({**BASE_REQUEST, "system": "Count me.", "tools": BASE_REQUEST["tools"][:1]})
    whole = count_request(req, "gemini-3.8-flash", "origin-1")["generateContentRequest"]
    assert whole["model"] == "models/gemini-3.8-flash" and whole["systemInstruction"]["parts"][0]["text"] == "Count me."
    assert whole["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    emu.validate_generate_request({k: v for k, v in whole.items() if k != "model"}, "gemini-3.8-flash",
                                  emu.EmulatorState())
    # Cloud Code counts contents only: the system text and the declarations ride in the first user turn
    folded = count_request(req, "gemini-3.8-flash", contents_only=True)["generateContentRequest"]
    assert set(folded) == {"model", "contents"}
    first = [p["text"] for p in folded["contents"][0]["parts"]]
    assert first[0] == "Count me." and "get_weather" in first[1] and first[2] == "hi"
    assert total_tokens({"totalTokens": 12}) == 12 and total_tokens({}) == 0 and total_tokens([]) == 0
    # OpenAI-compatible upstreams: one token per 4 bytes of the messages and tools they would get
    small, big = (openai_wire.estimate_tokens(parse({**BASE_REQUEST, "messages": [{"role": "user", "content": t}]})[0],
                                              "m") for t in ("hi", "hi " * 400))
    assert 0 < small < big and big >= 300


def test_claude_codes_context_suffix_is_dropped_before_mapping() -> None:
    req, ctx = parse({**BASE_REQUEST, "model": "claude-opus-4-8[1m]"})
    assert req.model == "claude-opus-4-8" and ctx.model == "claude-opus-4-8[1m]"  # answers echo what was sent
