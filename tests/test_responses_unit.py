"""Pure tests of the Responses front end: request -> canonical -> Gemini, upstream answer -> Response,
upstream stream -> Responses SSE, the store behind previous_response_id, and the errors.

Inputs and goldens live in tests/fixtures/responses/: `request_*.json` -> `request_*.golden.json` (the
Gemini request), `response_*.json` -> `.golden.json` (the Response object), `stream_*.json` ->
`.golden.json` (the SSE events). Random ids and timestamps are normalised.
`UPDATE_GOLDEN=1 pytest tests/test_responses_unit.py` regenerates the goldens (review the diff).

Every Response object and every stream event is also validated strictly against openai-python's own
models, and every stream is accumulated with the SDK's ResponseStreamState.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import pydantic
import pytest
from openai import NOT_GIVEN
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response
from openai.types.responses.response_stream_event import ResponseStreamEvent

from addon.backends import gemini
from addon.frontends.responses import ResponsesFrontend
from addon.protocol import canonical as c
from addon.ops.story import Story
from addon.protocol.errors import GatewayError
from addon.routes import Incoming, Route, RouteCall
from addon.stores.response_store import MemoryResponseStore
from tests import emulator as emu
from tests.golden import cases as golden_cases
from tests.golden import golden, normalise
from tests.golden import load as golden_load

DIR = Path(__file__).parent / "fixtures" / "responses"
EVENT = pydantic.TypeAdapter(ResponseStreamEvent)

# ---- helpers ----------------------------------------------------------------------------------

def load(name: str) -> Any:
    return golden_load(DIR / name)


def cases(prefix: str) -> list[str]:
    return golden_cases(DIR, prefix)


def new_front() -> ResponsesFrontend:
    return ResponsesFrontend(MemoryResponseStore())


def parse(front: ResponsesFrontend, body: Any) -> tuple[c.ChatRequest, Any]:
    return asyncio.run(front.parse(body))


def render(front: ResponsesFrontend, completion: c.Completion, req: c.ChatRequest, ctx: Any) -> dict[str, Any]:
    """What the engine does with a whole answer: render it, then let the front end keep it."""
    obj = front.render(completion, req, ctx)
    asyncio.run(front.settle(ctx))
    return obj


def gemini_request(body: dict[str, Any], model: str, front: ResponsesFrontend | None = None) -> dict[str, Any]:
    req, _ = parse(front or new_front(), body)
    out = gemini.build_request(req, model)
    try:  # the emulator is strict where Gemini is strict (turn pairing, signatures, schema subset)
        emu.validate_generate_request(json.loads(json.dumps(out)), model, emu.EmulatorState())
    except emu.GeminiInvalid as exc:
        pytest.fail(f"the emulator rejects the request: {exc.message}\n{json.dumps(out, indent=1)}")
    return out


def err_of(body: Any, front: ResponsesFrontend | None = None) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse(front or new_front(), body)
    return info.value


def parse_sse(raw: bytes) -> list[dict[str, Any]]:
    """`event: <type>` + `data: {json}` blocks; the event name must equal the payload's type."""
    text = raw.decode()
    assert text.endswith("\n\n") and "[DONE]" not in text
    out = []
    for block in text.split("\n\n")[:-1]:
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[len("data: "):])
        assert data["type"] == event_line[len("event: "):]
        out.append(data)
    return out


def check_stream_rules(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The event-order rules openai-python and Codex CLI rely on; returns the final Response object."""
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    terminal = ("response.completed", "response.incomplete", "response.failed")
    assert events[-1]["type"] in terminal and not any(e["type"] in terminal for e in events[:-1])
    resp_id = events[0]["response"]["id"]
    assert all(e["response"]["id"] == resp_id for e in events if "response" in e)
    done: list[dict[str, Any]] = []
    open_index: int | None = None
    for e in events[2:-1]:
        EVENT.validate_python(e)  # strictly what openai-python declares
        if e["type"] == "response.output_item.added":
            assert open_index is None, "items open strictly one after another"
            assert e["output_index"] == len(done), "output_index is contiguous"
            open_index = e["output_index"]
        elif e["type"] == "response.output_item.done":
            assert e["output_index"] == open_index
            done.append(e["item"])
            open_index = None
        else:
            assert e["output_index"] == open_index, f"{e['type']} outside its open item"
            if e["type"] == "response.output_text.delta":
                assert e["logprobs"] == []
    final = events[-1]["response"]
    Response.model_validate(final)
    if final["status"] != "failed":
        assert open_index is None and final["output"] == done, "the final response holds every full item"
    return final


def accumulate(events: list[dict[str, Any]]) -> Any:
    """openai-python's own stream state; returns its final response (None without response.completed)."""
    state = ResponseStreamState(input_tools=NOT_GIVEN, text_format=NOT_GIVEN)
    for e in events:
        state.handle_event(EVENT.validate_python(e))
    return state._completed_response


def without_parsed(obj: Any) -> Any:
    """The SDK's parsed objects add `parsed` / `parsed_arguments`; everything else must match the wire."""
    if isinstance(obj, dict):
        return {k: without_parsed(v) for k, v in obj.items() if k not in ("parsed", "parsed_arguments")}
    return [without_parsed(v) for v in obj] if isinstance(obj, list) else obj


def encode(front: ResponsesFrontend, body: dict[str, Any], upstream_events: list[dict[str, Any]]) -> bytes:
    req, ctx = parse(front, body)
    enc = front.encoder(req, ctx)
    decoder = gemini.GeminiStreamDecoder()
    out = enc.start()
    for data in upstream_events:
        out += b"".join(enc.feed(ev) for ev in decoder.feed(json.dumps(data)))
    out += b"".join(enc.feed(ev) for ev in decoder.finish())
    out += enc.close()
    asyncio.run(front.settle(ctx))
    return out


def sig_call_id(signature: str) -> str:
    return "call_0123456789abcdef.sig." + base64.urlsafe_b64encode(signature.encode()).decode().rstrip("=")


# ---- goldens ----------------------------------------------------------------------------------


def test_fixtures_exist() -> None:
    assert len(cases("request_")) >= 7 and len(cases("response_")) >= 4 and len(cases("stream_")) >= 4


@pytest.mark.parametrize("case", cases("request_"))
def test_request_golden(case: str) -> None:
    spec = load(f"request_{case}.json")
    golden(DIR / f"request_{case}.golden.json", normalise(gemini_request(spec["request"], spec["upstream_model"])))


@pytest.mark.parametrize("case", cases("response_"))
def test_response_golden(case: str) -> None:
    spec = load(f"response_{case}.json")
    front = new_front()
    req, ctx = parse(front, spec["request"])
    obj = render(front, gemini.completion_from(spec["upstream"]), req, ctx)
    parsed = Response.model_validate(obj)  # strict: every required field, every type
    assert parsed.model_dump(mode="json", exclude_unset=True) == obj, "the SDK keeps every field"
    assert parsed.output_text == "".join(p["text"] for i in obj["output"] if i["type"] == "message"
                                         for p in i["content"])
    golden(DIR / f"response_{case}.golden.json", normalise(obj))


@pytest.mark.parametrize("case", cases("stream_"))
def test_stream_golden(case: str) -> None:
    spec = load(f"stream_{case}.json")
    events = parse_sse(encode(new_front(), spec["request"], spec["events"]))
    final = check_stream_rules(events)
    sdk_final = accumulate(events)
    if final["status"] == "completed":
        sdk_output = sdk_final.model_dump(mode="json", exclude_unset=True)["output"]
        assert without_parsed(sdk_output) == final["output"], "the SDK's final object keeps every field"
        assert sdk_final.output_text == "".join(p["text"] for i in final["output"] if i["type"] == "message"
                                                for p in i["content"])
    golden(DIR / f"stream_{case}.golden.json", normalise(events))


# ---- request translation ----------------------------------------------------------------------


def test_string_input_and_instructions_both_reach_upstream() -> None:
    body = gemini_request(load("request_string_with_instructions.json")["request"], "gemini-2.5-flash")
    assert body["systemInstruction"] == {"parts": [{"text": "You are terse."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello there"}]}]


def test_consecutive_function_calls_form_one_model_turn() -> None:
    body = gemini_request(load("request_tool_loop.json")["request"], "gemini-2.5-flash")
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    calls = [p["functionCall"] for p in body["contents"][1]["parts"]]
    assert calls == [{"name": "get_weather", "args": {"city": "Paris"}}, {"name": "get_time", "args": {}}]
    answers = [p["functionResponse"] for p in body["contents"][2]["parts"]]
    assert answers == [{"name": "get_weather", "response": {"temp": 21}},
                       {"name": "get_time", "response": {"content": "12:00 UTC"}}]


def test_reasoning_items_and_call_ids_from_before_the_signature_store() -> None:
    """An old gateway put the signature itself in encrypted_content and in the call id. The call's
    is still sent (Gemini 3 requires one there); a reasoning blob of unknown origin is left out
    (never required, and it may be OpenAI's own encrypted reasoning)."""
    body = gemini_request(load("request_reasoning_gemini3.json")["request"], "gemini-3-pro-preview")
    model_turn = body["contents"][1]
    assert model_turn["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                    "thoughtSignature": "skip_thought_signature_validator"}]
    assert body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "high", "includeThoughts": True}


def test_a_stored_reasoning_signature_goes_back_to_its_issuer_only() -> None:
    front = new_front()
    req, ctx = parse(front, {"model": "m", "input": "hi"})
    issued = c.Signature("c2lnUg==", "gemini:aaaa", "gemini-3-pro-preview", "sig_" + "ab" * 12)
    obj = render(front, c.Completion([c.Choice(text="answer", reasoning="plan", reasoning_signature=issued)]), req, ctx)
    [item] = [i for i in obj["output"] if i["type"] == "reasoning"]
    assert item["encrypted_content"] == issued.key  # the key, not the signature
    follow, _ = parse(front, {"model": "m", "input": [item, {"role": "user", "content": "more"}]})
    part = follow.messages[0].content[0]
    assert isinstance(part, c.ReasoningPart) and part.signature == c.Signature("", key=issued.key)
    part.signature = issued  # what the engine's store lookup puts back
    own = gemini.build_request(follow, "gemini-3-pro-preview", "gemini:aaaa")
    assert own["contents"][0]["parts"][0] == {"text": "plan", "thought": True, "thoughtSignature": "c2lnUg=="}
    other = gemini.build_request(follow, "gemini-3-pro-preview", "gemini:bbbb")
    assert [p.get("thought") for p in other["contents"][0]["parts"]] == [None]  # dropped, not sent elsewhere


def test_hosted_tools_are_skipped_and_named_choice_kept() -> None:
    body = gemini_request(load("request_hosted_tools_skipped.json")["request"], "gemini-2.5-flash")
    # the freeform apply_patch travels as a function; web_search cannot join function tools on 2.5
    assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == ["get_weather", "apply_patch"]
    assert len(body["tools"]) == 1
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}


def test_parse_maps_generation_fields() -> None:
    req, ctx = parse(new_front(), load("request_structured_output.json")["request"])
    assert (req.temperature, req.top_p, req.max_tokens, req.user) == (0.2, 0.9, 256, "user-1")
    assert req.response_format is not None and req.response_format.name == "person"
    assert req.response_format.schema["required"] == ["name", "age"] and req.n == 1
    assert ctx.echo["metadata"] == {"run": "7"} and ctx.echo["text"]["verbosity"] == "low"


def test_unknown_items_are_skipped() -> None:
    req, _ = parse(new_front(), {"model": "m", "input": [
        {"type": "web_search_call", "id": "ws_1"}, {"type": "local_shell_call", "call_id": "x"},
        {"role": "user", "content": "hi"}]})
    assert [(m.role, m.text()) for m in req.messages] == [("user", "hi")]


@pytest.mark.parametrize("body, param, code", [
    ({"input": "hi"}, "model", "missing_required_parameter"),
    ({"model": "m"}, "input", "missing_required_parameter"),
    ({"model": "m", "input": []}, "input", "invalid_request"),
    ({"model": "m", "input": 5}, "input", "invalid_value"),
    ({"model": "m", "input": [{"content": "hi"}]}, "input[0].role", "missing_required_parameter"),
    ({"model": "m", "input": [{"role": "robot", "content": "hi"}]}, "input[0].role", "invalid_value"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
     "input[0].content[0].text", "missing_required_parameter"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_audio", "data": "x"}]}]},
     "input[0].content[0]", "invalid_value"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
     "input[0].content[0].file_id", "invalid_request"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image",
                                                            "image_url": "file:///etc/passwd"}]}]},
     "input[0].content[0].image_url", "invalid_image_url"),
    ({"model": "m", "input": [{"role": "assistant", "content": [{"type": "input_image",
                                                                 "image_url": "https://x/y.png"}]}]},
     "input[0].content[0]", "invalid_request"),
    ({"model": "m", "input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{bad"}]},
     "input[0].arguments", "invalid_request"),
    ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id", "missing_required_parameter"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "c"}]},
     "input[0].output", "missing_required_parameter"),
    ({"model": "m", "input": "hi", "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tools[0].name", "missing_required_parameter"),
    ({"model": "m", "input": "hi", "tool_choice": "required"}, "tool_choice", "invalid_request"),
    ({"model": "m", "input": "hi", "tools": [{"type": "function", "name": "f"}],
      "tool_choice": {"type": "function", "name": "g"}}, "tool_choice", "invalid_request"),
    ({"model": "m", "input": "hi", "tools": [{"type": "local_shell"}],
      "tool_choice": {"type": "local_shell"}}, "tool_choice", "invalid_request"),
    ({"model": "m", "input": "hi", "tool_choice": {"type": "web_search_preview"}}, "tool_choice", "invalid_request"),
    ({"model": "m", "input": [{"type": "custom_tool_call", "call_id": "c", "input": "x"}]},
     "input[0].name", "missing_required_parameter"),
    ({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}},
     "text.format.schema", "invalid_request"),
    ({"model": "m", "input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type", "invalid_value"),
    ({"model": "m", "input": "hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort", "invalid_value"),
    ({"model": "m", "input": "hi", "temperature": 3}, "temperature", "invalid_value"),
    ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
    ({"model": "m", "input": "hi", "background": True}, "background", "invalid_request"),
])
def test_bad_requests_name_the_param(body: dict[str, Any], param: str, code: str) -> None:
    err = err_of(body)
    assert (err.status, err.param, err.code, err.type) == (400, param, code, "invalid_request_error")
    assert err.payload()["error"]["message"]


def test_tool_choice_naming_a_skipped_tool_says_so() -> None:
    err = err_of({"model": "m", "input": "hi", "tools": [{"type": "local_shell"}],
                  "tool_choice": {"type": "allowed_tools", "mode": "auto",
                                  "tools": [{"type": "function", "name": "local_shell"}]}})
    assert "does not forward" in err.message


def test_non_object_body_is_400() -> None:
    assert err_of(["not", "an", "object"]).code == "invalid_json"


# ---- rendering ----------------------------------------------------------------------------------


def test_render_echoes_the_request() -> None:
    front = new_front()
    body = {"model": "gpt-4o", "input": "hi", "instructions": "Be brief.", "temperature": 0.5,
            "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}], "tool_choice": "auto",
            "reasoning": {"effort": "low"}, "store": False, "metadata": {"k": "v"}}
    req, ctx = parse(front, body)
    obj = render(front, c.Completion([c.Choice(text="ok")], c.Usage(3, 1)), req, ctx)
    assert obj["id"].startswith("resp_") and obj["object"] == "response" and obj["status"] == "completed"
    assert obj["model"] == "gpt-4o" and obj["instructions"] == "Be brief." and obj["temperature"] == 0.5
    assert obj["tools"] == body["tools"] and obj["reasoning"] == {"effort": "low"} and obj["store"] is False
    assert obj["metadata"] == {"k": "v"} and obj["error"] is None and obj["incomplete_details"] is None
    assert obj["usage"] == {"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                            "output_tokens": 1, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 4}
    assert Response.model_validate(obj).output_text == "ok"
    assert len(front.store) == 0, "store: false is not kept"


def test_incomplete_statuses() -> None:
    front = new_front()
    req, ctx = parse(front, {"model": "m", "input": "hi"})
    obj = render(front, c.Completion([c.Choice(text="cut", finish_reason="length")]), req, ctx)
    assert (obj["status"], obj["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
    req, ctx = parse(front, {"model": "m", "input": "hi"})
    obj = render(front, c.Completion([c.Choice(finish_reason="content_filter")]), req, ctx)
    assert (obj["status"], obj["incomplete_details"], obj["output"]) == ("incomplete", {"reason": "content_filter"},
                                                                         [])


# ---- previous_response_id and the store -------------------------------------------------------


def test_previous_response_continues_the_conversation_without_old_instructions() -> None:
    front = new_front()
    req1, ctx1 = parse(front, {"model": "m", "input": "one", "instructions": "old rules"})
    first = render(front, c.Completion([c.Choice(text="answer one")]), req1, ctx1)
    req2, _ = parse(front, {"model": "m", "input": "two", "instructions": "new rules",
                           "previous_response_id": first["id"]})
    assert [(m.role, m.text()) for m in req2.messages] == [
        ("system", "new rules"), ("user", "one"), ("assistant", "answer one"), ("user", "two")]


def test_tool_loop_through_previous_response_id() -> None:
    front = new_front()
    body = {"model": "m", "input": "weather?", "tools": [{"type": "function", "name": "get_weather"}]}
    req1, ctx1 = parse(front, body)
    call_id = sig_call_id("skip_thought_signature_validator")
    first = render(front, c.Completion([c.Choice(tool_calls=[c.ToolCall(call_id, "get_weather", '{"city":"Paris"}')],
                                                finish_reason="tool_calls")]), req1, ctx1)
    assert first["output"][0]["call_id"] == call_id
    follow = {**body, "previous_response_id": first["id"],
              "input": [{"type": "function_call_output", "call_id": call_id, "output": '{"temp":20}'}]}
    out = gemini_request(follow, "gemini-3-pro-preview", front)
    assert [c["role"] for c in out["contents"]] == ["user", "model", "user"]
    assert out["contents"][1]["parts"][0]["thoughtSignature"] == "skip_thought_signature_validator"
    assert out["contents"][2]["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"temp": 20}}


def test_unknown_previous_response_is_404() -> None:
    err = err_of({"model": "m", "input": "hi", "previous_response_id": "resp_nope"})
    assert (err.status, err.type, err.param, err.code) == (404, "not_found_error", "previous_response_id",
                                                           "previous_response_not_found")


def test_store_false_cannot_be_continued() -> None:
    front = new_front()
    req, ctx = parse(front, {"model": "m", "input": "hi", "store": False})
    obj = render(front, c.Completion([c.Choice(text="x")]), req, ctx)
    assert err_of({"model": "m", "input": "hi", "previous_response_id": obj["id"]}, front).status == 404


def test_store_is_lru_bounded_and_expires() -> None:
    now = [0.0]
    store = MemoryResponseStore(max_items=2, ttl=10, clock=lambda: now[0])
    for rid in ("resp_a", "resp_b"):
        asyncio.run(store.put({"id": rid}, []))
    assert asyncio.run(store.get("resp_a")) is not None  # a is now the most recently used
    asyncio.run(store.put({"id": "resp_c"}, []))
    assert asyncio.run(store.get("resp_b")) is None and len(store) == 2
    assert asyncio.run(store.get("resp_a")) and asyncio.run(store.get("resp_c"))
    now[0] = 10.5
    assert asyncio.run(store.get("resp_a")) is None and len(store) == 1


def test_get_route_returns_the_stored_response() -> None:
    front = new_front()
    req, ctx = parse(front, {"model": "m", "input": "hi"})
    obj = render(front, c.Completion([c.Choice(text="x")]), req, ctx)
    routes = {r.method: r for r in front.routes()}
    assert set(routes) == {"POST", "GET", "DELETE"} and routes["POST"].handler is None

    def call(route: Route, path: str) -> tuple[int, Any]:
        match = re.fullmatch(route.pattern, path)
        assert match and route.handler is not None
        out = asyncio.run(route.handler(RouteCall(Incoming(route.method, path, {}), match, None, Story(), None)))
        return out.status, json.loads(out.body)

    for path in (f"/v1/responses/{obj['id']}", f"/responses/{obj['id']}"):
        assert call(routes["GET"], path) == (200, obj)
    with pytest.raises(GatewayError) as info:
        call(routes["GET"], "/v1/responses/resp_missing")
    assert (info.value.status, info.value.type) == (404, "not_found_error")
    assert call(routes["DELETE"], f"/v1/responses/{obj['id']}") == (
        200, {"id": obj["id"], "object": "response.deleted", "deleted": True})
    with pytest.raises(GatewayError):
        call(routes["GET"], f"/v1/responses/{obj['id']}")
    assert front.owns("/v1/responses/x") and front.owns("/responses") and not front.owns("/v1/chat/completions")


# ---- stream ---------------------------------------------------------------------------------------


def test_stream_stores_the_completed_response_and_history() -> None:
    front = new_front()
    spec = load("stream_reasoning_text_tools.json")
    events = parse_sse(encode(front, spec["request"], spec["events"]))
    final = events[-1]["response"]
    stored = asyncio.run(front.store.get(final["id"]))
    assert stored is not None and stored.response == final
    turn = stored.conversation[-1]
    assert turn.role == "assistant" and [tc.name for tc in turn.tool_calls] == ["get_weather", "get_time"]
    # The signatures stay in the gateway's signature store: the stored turn refers to them by key
    # (the reasoning item's encrypted_content, the call id), and the engine looks them up again.
    reasoning = turn.content[0]
    assert isinstance(reasoning, c.ReasoningPart) and reasoning.signature is not None
    assert reasoning.signature.value == "" and re.fullmatch(r"sig_[0-9a-f]{24}", reasoning.signature.key or "")
    assert re.fullmatch(r"call_[0-9a-f]{24}", turn.tool_calls[0].id)


def test_stream_failure_leaves_half_open_items_and_reports_failed() -> None:
    front = new_front()
    req, ctx = parse(front, {"model": "m", "input": "hi", "stream": True})
    enc = front.encoder(req, ctx)
    raw = enc.start() + enc.feed(c.ReasoningDelta(0, "hmm")) + enc.feed(c.TextDelta(0, "Hal"))
    raw += enc.fail(GatewayError(502, "Upstream stream failed: connection reset", code="upstream_stream_error"))
    events = parse_sse(raw)
    final = check_stream_rules(events)
    types = [e["type"] for e in events]
    assert types.count("response.output_item.done") == 1, "only the reasoning item was finished"
    assert "response.output_text.done" not in types
    assert final["status"] == "failed" and final["error"] == {"code": "server_error",
                                                              "message": "Upstream stream failed: connection reset"}
    assert [i["type"] for i in final["output"]] == ["reasoning"]
    assert accumulate(events) is None, "the SDK sees no completed response"
    assert len(front.store) == 0


def test_stream_ignores_other_choices_and_drops_stray_argument_fragments() -> None:
    front = new_front()
    req, ctx = parse(front, {"model": "m", "input": "hi", "stream": True})
    enc = front.encoder(req, ctx)
    raw = enc.start() + enc.feed(c.TextDelta(1, "other choice"))
    raw += enc.feed(c.ToolCallDelta(0, 0, "", id="call_1", name="f")) + enc.feed(c.ToolCallDelta(0, 0, '{"a":1}'))
    raw += enc.feed(c.TextDelta(0, "after")) + enc.feed(c.ToolCallDelta(0, 0, "late"))
    raw += enc.feed(c.Finish(0, "tool_calls")) + enc.close()
    final = check_stream_rules(parse_sse(raw))
    assert [(i["type"], i.get("arguments")) for i in final["output"]] == [("function_call", '{"a":1}'),
                                                                          ("message", None)]
