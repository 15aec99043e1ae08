"""What current Codex CLI sends beyond plain function tools, translated without a network:
`namespace` tools (MCP servers, sub-agents), `tool_search`, hosted tools that cannot be served
(said in the story), and reasoning state sealed into `encrypted_content` for `store: false`.

The golden fixtures `tests/fixtures/responses/*namespace*` and `*tool_search*` (run by
test_responses_unit.py's golden tests) pin the wire shapes; these tests pin the rules."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response

from addon.stores import sealing
from addon.backends import gemini
from addon.frontends.responses import ResponsesFrontend
from addon.frontends.responses_tools import ClientTool, ToolPlan, flat_name
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError
from addon.protocol.openai.responses import validate_request
from addon.stores.response_store import MemoryResponseStore
from addon.stores.shared.local import LocalState
from addon.ops.story import Story
from tests import emulator as emu

KEY = bytes(range(32))
SEALER = sealing.Sealer([KEY])
ECHO = {"type": "function", "name": "echo", "description": "Echo text.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}
PROBE = {"type": "namespace", "name": "mcp__probe", "description": "Tools in the mcp__probe namespace.", "tools": [ECHO]}
SIG = c.Signature("c2lnOnJlYWw=", "gemini:aaaa", "gemini-3-pro-preview")


def front(sealer: sealing.Sealer | None = SEALER) -> ResponsesFrontend:
    return ResponsesFrontend(MemoryResponseStore(), sealer)


def parse(f: ResponsesFrontend, body: dict[str, Any]) -> tuple[c.ChatRequest, Any]:
    return asyncio.run(f.parse(body))


def plan_of(tools: list[dict[str, Any]]) -> ToolPlan:
    plan = ToolPlan()
    plan.add_defs(validate_request({"model": "m", "tools": tools}).tools)
    return plan


def accepted(body: dict[str, Any], model: str, state: emu.EmulatorState | None = None) -> None:
    try:
        emu.validate_generate_request(json.loads(json.dumps(body)), model, state or emu.EmulatorState())
    except emu.GeminiInvalid as exc:
        pytest.fail(f"the emulator rejects the request: {exc.message}")


# ---- namespace tools ---------------------------------------------------------------------------


def test_every_inner_tool_is_offered_under_a_unique_name_that_maps_back() -> None:
    clash = {**ECHO, "name": "mcp__probe__echo"}  # a top-level tool already named like the flat form
    other = {"type": "namespace", "name": "mcp__other", "tools": [ECHO]}
    plan = plan_of([PROBE, clash, other])
    names = [t.name for t in plan.upstream]
    assert len(set(names)) == 3 and names[0] == "mcp__probe__echo", "the top-level tool keeps its own name"
    assert names[1].startswith("mcp__probe__echo_") and names[2] == "mcp__other__echo"
    assert plan_of([PROBE, clash, other]).upstream == plan.upstream, "deterministic"
    assert plan.client_tool(names[1]).namespace == "mcp__probe" and plan.client_tool(names[1]).name == "echo"
    assert plan.client_tool(names[0]).namespace is None
    assert plan.canonical("echo", "mcp__probe") == names[1] and plan.canonical("echo", "mcp__gone") == "mcp__gone__echo"
    # a tool a search loads later, named like a flat form already taken, gets a name of its own
    [loaded] = plan.add_loaded([{**ECHO, "name": "mcp__other__echo"}])
    assert loaded.startswith("mcp__other__echo_") and plan.client_tool(loaded) == ClientTool("mcp__other__echo")
    assert len({t.name for t in plan.upstream}) == 4


def test_names_gemini_refuses_are_made_legal_and_come_back_exactly() -> None:
    ns = {"type": "namespace", "name": "mcp__my-server.v2", "tools": [
        {**ECHO, "name": "read file/" + "x" * 80}]}
    f = front(None)
    req, ctx = parse(f, {"model": "m", "input": "go", "tools": [ns]})
    body = gemini.build_request(req, "gemini-2.5-flash")
    accepted(body, "gemini-2.5-flash")
    [decl] = body["tools"][0]["functionDeclarations"]
    assert len(decl["name"]) <= 64
    answer = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": decl["name"], "args": {"text": "x"}}}]}, "finishReason": "STOP"}]}
    _, reply = gemini.prepare(req, "gemini-2.5-flash")
    obj = f.render(gemini.completion_from(answer, reply=reply), req, ctx)
    [item] = obj["output"]
    assert (item["name"], item["namespace"]) == ("read file/" + "x" * 80, "mcp__my-server.v2")


def test_a_namespaced_tool_can_be_forced_by_tool_choice() -> None:
    req, _ = parse(front(), {"model": "m", "input": "go", "tools": [PROBE],
                             "tool_choice": {"type": "function", "name": "echo", "namespace": "mcp__probe"}})
    assert req.tool_choice == c.ToolChoice("required", ("mcp__probe__echo",))
    with pytest.raises(GatewayError) as info:
        parse(front(), {"model": "m", "input": "go", "tools": [PROBE], "tool_choice": {"type": "function", "name": "echo"}})
    assert info.value.status == 400 and "echo" in info.value.message


def test_response_objects_with_namespaced_calls_satisfy_the_sdk() -> None:
    f = front(None)
    req, ctx = parse(f, {"model": "m", "input": "go", "tools": [PROBE]})
    call = c.ToolCall("call_1", "mcp__probe__echo", '{"text": "hi"}')
    obj = f.render(c.Completion([c.Choice(tool_calls=[call], finish_reason="tool_calls")]), req, ctx)
    out = Response.model_validate(obj).output[0]
    assert (out.type, out.name, out.namespace, out.call_id) == ("function_call", "echo", "mcp__probe", "call_1")


# ---- what cannot be served is said, not dropped ----------------------------------------------------


def test_hosted_tools_that_cannot_be_served_are_named_in_the_story() -> None:
    req, _ = parse(front(), {"model": "m", "input": "go", "tools": [
        PROBE, {"type": "web_search", "external_web_access": False}, {"type": "image_generation"},
        {"type": "tool_search", "execution": "server"},
        {"type": "namespace", "name": "ns", "tools": [{"type": "mcp", "name": "remote"}]}]})
    assert req.left_out == ["web_search (cached index only)", "image_generation",
                            "tool_search (server: deferred tools offered directly)", "ns.remote (mcp)"]
    story = Story(method="POST", path="/v1/responses", client_model="m", left_out=req.left_out)
    assert "left out: web_search (cached index only), image_generation" in story.comment()
    assert "left_out=" in story.log_line() and "image_generation" in story.log_line()


# ---- tool_search ------------------------------------------------------------------------------


def test_tools_a_search_loaded_are_offered_and_callable() -> None:
    loaded = {"type": "tool_search_output", "call_id": "call_ts", "execution": "client", "tools": [PROBE]}
    search = {"type": "tool_search_call", "call_id": "call_ts", "execution": "client", "arguments": {"query": "echo"}}
    f = front()
    req, ctx = parse(f, {"model": "m", "tools": [{"type": "tool_search", "execution": "client"}],
                         "input": [{"role": "user", "content": "echo hi"}, search, loaded]})
    assert [t.name for t in req.tools] == ["tool_search", "mcp__probe__echo"]
    body = gemini.build_request(req, "gemini-2.5-flash")
    accepted(body, "gemini-2.5-flash")
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"]["loaded_tools"] == ["mcp__probe__echo"]
    obj = f.render(c.Completion([c.Choice(tool_calls=[c.ToolCall("call_2", "mcp__probe__echo", "{}")])]), req, ctx)
    assert obj["output"][0]["namespace"] == "mcp__probe"


# ---- sealing ----------------------------------------------------------------------------------


def test_sealed_tokens_open_only_untouched_with_the_same_purpose_and_key() -> None:
    token = SEALER.seal("p", {"a": [1, "ü"]})
    assert sealing.Sealer.is_sealed(token) and SEALER.open("p", token) == {"a": [1, "ü"]}
    assert SEALER.open("q", token) is None, "bound to its purpose"
    assert sealing.Sealer([bytes(32)]).open("p", token) is None, "another gateway's key"
    raw = bytearray(base64.urlsafe_b64decode(token[5:] + "=" * (-len(token[5:]) % 4)))
    raw[-1] ^= 1
    assert SEALER.open("p", "gws1." + base64.urlsafe_b64encode(bytes(raw)).decode()) is None, "altered"
    for junk in ("", "gws1.", "gws1.!!!", "gws1." + "A" * 10, "gAAAAABopenai", None, 5, "gws1." + "A" * (2 << 20)):
        assert SEALER.open("p", junk) is None


def test_key_rotation_opens_old_tokens_and_seals_with_the_new_key() -> None:
    old = sealing.Sealer([KEY]).seal("p", 1)
    rotated = sealing.Sealer(sealing.keys_from_text("new secret, " + sealing.encode_key(KEY)))
    assert rotated.open("p", old) == 1
    assert sealing.Sealer([KEY]).open("p", rotated.seal("p", 2)) is None
    assert sealing.key_from_text(sealing.encode_key(KEY)) == KEY == sealing.key_from_text(KEY.hex())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_opening_never_raises(token: str) -> None:
    assert SEALER.open("p", "gws1." + token) is None and SEALER.open("p", token) is None


def test_the_generated_key_is_kept_in_the_state_file(tmp_path) -> None:
    path = tmp_path / "state.json"
    first = LocalState(path).secret("seal_key", lambda: "made-once")
    assert first == "made-once" and json.loads(path.read_text())["secrets"] == {"seal_key": "made-once"}
    assert LocalState(path).secret("seal_key", lambda: "made-twice") == "made-once", "survives a restart"


# ---- stateless sessions: signatures sealed into reasoning items ------------------------------------


def step(signature: c.Signature | None, calls: list[c.ToolCall], reasoning: str = "") -> c.Completion:
    return c.Completion([c.Choice(reasoning=reasoning, reasoning_signature=None, tool_calls=calls,
                                  finish_reason="tool_calls")])


def test_store_false_round_trip_keeps_the_real_signature_with_no_store() -> None:
    codex = {"model": "m", "tools": [PROBE], "store": False, "include": ["reasoning.encrypted_content"]}
    call = c.ToolCall("call_1", "mcp__probe__echo", '{"text": "hi"}', c.Signature(SIG.value, SIG.origin, SIG.model, "call_1"))
    first_req, ctx = parse(front(), {**codex, "input": "echo hi"})
    obj = front().render(step(None, [call]), first_req, ctx)
    reasoning, fc = obj["output"]
    assert reasoning["type"] == "reasoning" and sealing.Sealer.is_sealed(reasoning["encrypted_content"])
    assert SIG.value not in json.dumps(obj), "the signature is not readable by the client"
    history = [{"role": "user", "content": "echo hi"}, reasoning, {**fc, "id": None},
               {"type": "function_call_output", "call_id": "call_1", "output": "echo: hi"}]
    # another instance, same key, empty stores (a restart, or the next request landing elsewhere)
    second, _ = parse(front(sealing.Sealer([KEY])), {**codex, "input": history})
    [tc] = second.messages[1].tool_calls
    assert (tc.name, tc.signature.value, tc.signature.origin) == ("mcp__probe__echo", SIG.value, SIG.origin)
    state = emu.EmulatorState()
    state.signatures[SIG.value] = "aaaa"
    body = gemini.build_request(second, "gemini-3-pro-preview", "gemini:aaaa")
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == SIG.value
    # a gateway with another key cannot open it: the documented dummy goes instead, never an error
    foreign, _ = parse(front(sealing.Sealer([bytes(32)])), {**codex, "input": history})
    body = gemini.build_request(foreign, "gemini-3-pro-preview", "gemini:aaaa")
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == gemini.DUMMY_SIGNATURE


def test_tampered_sealed_items_are_ignored_not_refused() -> None:
    tampered = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}],
                "encrypted_content": "gws1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
    req, _ = parse(front(), {"model": "m", "input": [tampered, {"role": "user", "content": "go on"}]})
    assert req.messages[0].content == [c.ReasoningPart("plan")]


def test_without_include_the_store_key_is_used_as_before() -> None:
    f = front()
    req, ctx = parse(f, {"model": "m", "input": "go", "tools": [PROBE]})
    call = c.ToolCall("call_1", "mcp__probe__echo", "{}", c.Signature(SIG.value, SIG.origin, SIG.model, "call_1"))
    obj = f.render(step(None, [call]), req, ctx)
    assert [i["type"] for i in obj["output"]] == ["function_call"], "no sealed reasoning item unless asked for"


def test_stream_seals_the_call_signature_into_a_reasoning_item_before_the_call() -> None:
    f = front()
    req, ctx = parse(f, {"model": "m", "input": "go", "tools": [PROBE], "stream": True,
                         "include": ["reasoning.encrypted_content"]})
    enc = f.encoder(req, ctx)
    sig = c.Signature(SIG.value, SIG.origin, SIG.model, "call_1")
    raw = enc.start() + enc.feed(c.ReasoningDelta(0, "thinking")) + enc.feed(
        c.ToolCallDelta(0, 0, '{"text": "hi"}', id="call_1", name="mcp__probe__echo", signature=sig))
    raw += enc.feed(c.Finish(0, "tool_calls")) + enc.close()
    events = [json.loads(line[6:]) for line in raw.decode().split("\n") if line.startswith("data: ")]
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in done] == ["reasoning", "function_call"]
    opened = sealing.Sealer([KEY]).open("responses.reasoning", done[0]["encrypted_content"])
    assert opened["c"] == {"call_1": [SIG.value, SIG.origin, SIG.model]}
    assert done[1]["namespace"] == "mcp__probe" and done[1]["name"] == "echo"


def test_flat_name_follows_codex() -> None:
    assert flat_name("mcp__probe", "echo") == "mcp__probe__echo"
    assert flat_name("ns_", "_tool") == "ns__tool"


def test_namespaces_count_each_inner_tool_against_the_tool_bound() -> None:
    many = [{"type": "namespace", "name": f"mcp__s{i}", "tools": [{**ECHO, "name": f"t{j}"} for j in range(100)]}
            for i in range(6)]
    with pytest.raises(GatewayError) as info:
        parse(front(), {"model": "m", "input": "go", "tools": many})
    assert info.value.status == 400 and info.value.param == "tools" and "600" in info.value.message
