"""Pure translator tests: Chat Completions <-> canonical <-> Gemini, with golden JSON fixtures.

Inputs live in tests/fixtures/chat/request_*.json (chat request -> Gemini request) and
tests/fixtures/gemini/{response,stream}_*.json (Gemini response / SSE events -> chat completion /
chunk sequence). Expected outputs are the `*.golden.json` files next to the *other* side's inputs.
Random ids and timestamps are normalised. `UPDATE_GOLDEN=1 pytest tests/test_translate_unit.py`
regenerates the goldens (review the diff before keeping it).

Beyond the goldens, every Gemini request built here must pass the emulator's validator (the
emulator is strict where the real API is strict), and every chunk sequence is checked against the
rules openai-python relies on (see check_chunk_rules) and accumulated with the SDK's own stream state.
"""

from __future__ import annotations

import base64
import json
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from addon.backends import gemini
from addon.frontends import chat, encode_stream
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError
from addon.upstream.sse import SSEEvent, SSEParser
from addon.upstream.streaming import decode_stream
from tests import emulator as emu
from tests.golden import cases, golden, load, normalise

FIXTURES = Path(__file__).parent / "fixtures"
CHAT_DIR, GEMINI_DIR = FIXTURES / "chat", FIXTURES / "gemini"
DUMMY = "skip_thought_signature_validator"


# ---- helpers ----------------------------------------------------------------------------------

def emulator_accepts(body: dict[str, Any], model: str, state: emu.EmulatorState | None = None) -> emu.GenRequest:
    """The emulator's own request validator (shape, schema subset, turn pairing, signatures)."""
    try:
        return emu.validate_generate_request(json.loads(json.dumps(body)), model, state or emu.EmulatorState())
    except emu.GeminiInvalid as exc:
        pytest.fail(f"the emulator rejects the request: {exc.message}\n{json.dumps(body, indent=1)[:3000]}")


def build(body: dict[str, Any], model: str = "gemini-2.5-flash") -> dict[str, Any]:
    return gemini.build_request(chat.parse(body), model)


def user_msg(text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def err_of(body: Any) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        gemini.build_request(chat.parse(body), "gemini-2.5-flash")
    return info.value


def sse_bytes(events: list[Any]) -> bytes:
    """Frame Gemini events the way Google does: `data: {json}` + CRLF CRLF, no [DONE]."""
    return b"".join(b"data: " + json.dumps(e, ensure_ascii=False).encode() + b"\r\n\r\n" for e in events)


class FakeUpstreamResponse:
    """An upstream 200 whose body arrives in the given pieces (the provider's response interface)."""

    status = 200
    headers: dict[str, str] = {}

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.closed = False

    async def chunks(self) -> AsyncIterator[bytes]:
        for p in self.pieces:
            yield p

    async def read(self) -> bytes:
        return b"".join(self.pieces)

    async def close(self) -> None:
        self.closed = True


def split_randomly(data: bytes, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, max(1, len(data) // 7))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=False)]


async def translate_stream(body: dict[str, Any], pieces: list[bytes]) -> bytes:
    """Gemini SSE bytes -> the bytes the client gets: the real provider decoder and engine SSE glue."""
    req, legacy = chat.parse_with_context(body)
    resp = FakeUpstreamResponse(pieces)
    batches = decode_stream(resp, gemini.GeminiStreamDecoder(req.n))
    out = b"".join([piece async for piece in encode_stream(batches, chat.ChatStreamEncoder(req, legacy))])
    assert resp.closed, "the upstream response is released when the stream ends"
    return out


def parse_client_sse(raw: bytes) -> list[Any]:
    """What an OpenAI client sees: `data: ` lines separated by blank lines; [DONE] kept as a string."""
    text = raw.decode()
    assert text.endswith("\n\n"), "every event ends with a blank line"
    out: list[Any] = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: ") and "\n" not in block, f"unexpected SSE block {block!r}"
        payload = block[len("data: "):]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def check_chunk_rules(events: list[Any], include_usage: bool) -> None:
    """What openai-python's stream accumulation (lib/streaming/_deltas.py) relies on."""
    failed = any(isinstance(e, dict) and "error" in e for e in events)
    if failed:
        assert "[DONE]" not in events, "a failed stream must not look complete"
        assert isinstance(events[-1], dict) and set(events[-1]) == {"error"}
        assert {"message", "type", "code"} <= set(events[-1]["error"])
        events = events[:-1]
    else:
        assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
        events = events[:-1]
    chunks = [e for e in events if isinstance(e, dict)]
    assert len(chunks) == len(events)
    assert len({ch["id"] for ch in chunks}) <= 1 and len({ch["created"] for ch in chunks}) <= 1
    for ch in chunks:
        assert ch["id"].startswith("chatcmpl-") and ch["object"] == "chat.completion.chunk"
        assert ch["model"] and isinstance(ch["created"], int)
        if include_usage:
            assert "usage" in ch
        else:
            assert "usage" not in ch
    if include_usage and not failed:
        assert chunks[-1]["choices"] == [] and isinstance(chunks[-1]["usage"], dict)
        assert all(ch["usage"] is None for ch in chunks[:-1])
        body = chunks[:-1]
    else:
        body = chunks
    seen_role: set[int] = set()
    calls_seen: dict[int, set[int]] = {}
    finished: set[int] = set()
    for ch in body:
        assert len(ch["choices"]) == 1
        choice = ch["choices"][0]
        i, delta = choice["index"], choice["delta"]
        assert i not in finished, "nothing after a choice's finish_reason"
        if "role" in delta:
            assert i not in seen_role, "role only in a choice's first delta"
            assert delta["role"] == "assistant"
        else:
            assert i in seen_role, "the first delta of a choice carries the role"
        seen_role.add(i)
        if "function_call" in delta:  # the legacy form: name in the first delta only, one call
            assert "tool_calls" not in delta and set(delta["function_call"]) <= {"name", "arguments"}
            assert ("name" in delta["function_call"]) == (i not in calls_seen)
            calls_seen.setdefault(i, set()).add(0)
        for tc in delta.get("tool_calls", []):
            assert isinstance(tc["index"], int)
            seen = calls_seen.setdefault(i, set())
            if tc["index"] in seen:
                assert set(tc) == {"index", "function"} and set(tc["function"]) == {"arguments"}
            else:
                seen.add(tc["index"])
                assert tc["id"].startswith("call_") and tc["type"] == "function" and tc["function"]["name"]
        if choice["finish_reason"] is not None:
            finished.add(i)
            assert choice["finish_reason"] in ("stop", "length", "tool_calls", "function_call", "content_filter")
            if calls_seen.get(i):
                assert choice["finish_reason"] in ("tool_calls", "function_call")


def accumulate(events: list[Any]) -> Any:
    state = ChatCompletionStreamState()
    for e in events:
        if isinstance(e, dict) and "error" not in e:
            state.handle_chunk(ChatCompletionChunk.model_validate(e))
    return state.current_completion_snapshot  # get_final_completion() refuses finish_reason length


# ---- goldens: chat request -> Gemini request ------------------------------------------------

REQUEST_CASES = cases(CHAT_DIR, "request_")


def test_request_fixtures_exist() -> None:
    assert len(REQUEST_CASES) >= 10 and len(cases(GEMINI_DIR, "response_")) >= 5
    assert len(cases(GEMINI_DIR, "stream_")) >= 8


@pytest.mark.parametrize("case", REQUEST_CASES)
def test_request_golden(case: str) -> None:
    spec = load(CHAT_DIR / f"request_{case}.json")
    body = build(spec["request"], spec["upstream_model"])
    golden(GEMINI_DIR / f"request_{case}.golden.json", normalise(body))
    emulator_accepts(body, spec["upstream_model"])


def test_system_and_developer_become_system_instruction() -> None:
    spec = load(CHAT_DIR / "request_system_developer.json")
    body = build(spec["request"])
    assert body["systemInstruction"] == {
        "parts": [{"text": "You are terse.\n\nAnswer in French. Always.\n\nLate system note."}]}
    assert [c["role"] for c in body["contents"]] == ["user"]  # the two user turns around a system msg merge
    assert body["contents"][0]["parts"] == [{"text": "Hello"}, {"text": "Still there?"}]
    # a system-only conversation still needs a user turn for Gemini
    only = build(load(CHAT_DIR / "request_system_only.json")["request"])
    assert only == {"contents": [{"role": "user", "parts": [{"text": "Say hello."}]}]}
    assert err_of({"model": "m", "messages": [{"role": "system", "content": ""}]}).param == "messages"


def test_consecutive_roles_merge_and_alternate() -> None:
    body = build(load(CHAT_DIR / "request_multi_turn_merge.json")["request"])
    roles = [c["role"] for c in body["contents"]]
    assert roles == ["user", "model", "user"]
    assert body["contents"][0]["parts"] == [{"text": "first"}, {"text": "second"}]
    assert body["contents"][1]["parts"] == [{"text": "reply one"}, {"text": "reply two"}]  # no unsigned thought


def test_tool_results_pair_with_calls_by_id() -> None:
    spec = load(CHAT_DIR / "request_tool_round_trip.json")
    body = build(spec["request"])
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    model_turn, results = body["contents"][1:]
    assert [p["functionCall"]["name"] for p in model_turn["parts"]] == ["get_weather", "get_time"]
    assert model_turn["parts"][0]["functionCall"]["args"] == {"city": "Paris"}
    assert model_turn["parts"][1]["functionCall"]["args"] == {}  # "" arguments -> {}
    # answers came in a different order than the calls: names are resolved from tool_call_id and
    # the responses are put back in call order (Gemini pairs them by position)
    assert [p.get("functionResponse") for p in results["parts"]] == [
        {"name": "get_weather", "response": {"temp": 21, "sky": "clear"}},
        {"name": "get_time", "response": {"content": "12:00"}},
        None,
    ]
    assert all("_order" not in p for c in body["contents"] for p in c["parts"])
    # the user's follow-up joins the same user turn (Gemini wants alternating roles)
    assert results["parts"][2] == {"text": "Thanks, summarise."}
    # the thought signature in the first call's id goes back on that call only
    sig = base64.b64encode(b"sig:0123456789abcdef").decode()
    assert model_turn["parts"][0]["thoughtSignature"] == sig
    assert "thoughtSignature" not in model_turn["parts"][1]
    # unknown tool_call_id: still a well-formed functionResponse (no crash, no empty name)
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [{"id": "a", "type": "function",
                                                 "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "zzz", "content": "[1, 2]"}]
    fr = build({"model": "m", "messages": msgs})["contents"][2]["parts"][0]["functionResponse"]
    assert fr["name"] and fr["response"] == {"content": [1, 2]}


def test_legacy_function_call_messages() -> None:
    spec = load(CHAT_DIR / "request_legacy_functions.json")
    body = build(spec["request"])
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "lookup", "args": {"q": "cats"}}}]
    assert body["contents"][2]["parts"] == [
        {"functionResponse": {"name": "lookup", "response": {"content": ["tabby", "siamese"]}}}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}}


# ---- thought signatures ------------------------------------------------------------------------
# Rules: ai.google.dev/gemini-api/docs/thought-signatures ("Validation": the current turn starts at
# the last user content with text; the first functionCall of each model step there needs its
# signature on Gemini 3; the dummy "skip_thought_signature_validator" passes, FAQ section), and a
# signature is refused by any other credential (google-gemini/gemini-cli#13467).

GEM3 = "gemini-3-pro-preview"
LOOKUP_TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}}}}]


def sig(value: str, origin: str | None = "gemini:aaaa", model: str | None = GEM3) -> c.Signature:
    return c.Signature(value, origin, model)


def loop_request(*steps: c.Signature | None, ids: tuple[str, ...] = (), follow_up: str | None = None) -> c.ChatRequest:
    """user text, then one model step (a call, and its result) per entry in `steps`."""
    msgs = [c.Message("user", [c.TextPart("go")])]
    for k, signature in enumerate(steps):
        call_id = ids[k] if k < len(ids) else f"call_{k}"
        msgs.append(c.Message("assistant", tool_calls=[c.ToolCall(call_id, "lookup", "{}", signature)]))
        msgs.append(c.Message("tool", [c.TextPart("{}")], tool_call_id=call_id))
    if follow_up:
        msgs.append(c.Message("user", [c.TextPart(follow_up)]))
    return c.ChatRequest(model="gpt-5", messages=msgs, tools=[c.Tool("lookup")])


def call_signatures(body: dict[str, Any]) -> list[str | None]:
    return [p.get("thoughtSignature") for content in body["contents"] for p in content["parts"] if "functionCall" in p]


def test_new_tool_call_ids_are_short_openai_ids_without_the_signature() -> None:
    """OpenAI's ids are call_ + 24 characters; clients cap them at 40 (autogen#6377) or 64."""
    answer = {"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "QUJD" * 400}]}, "finishReason": "STOP"}]}
    [call] = gemini.completion_from(answer, 1, gemini.Reply(origin="gemini:aaaa", model=GEM3)).choices[0].tool_calls
    assert re.fullmatch(r"call_[0-9a-f]{24}", call.id) and len(call.id) <= 40
    assert call.signature == c.Signature("QUJD" * 400, "gemini:aaaa", GEM3, call.id)  # kept aside, keyed by id
    assert gemini.tool_call_id() != gemini.tool_call_id()


@pytest.mark.parametrize("value", ["c2lnOmFiYw==", "x", "a/b+c=" * 40, "ünïcødé"])
def test_old_ids_with_the_signature_inside_are_still_understood(value: str) -> None:
    """Ids issued before the store ("call_<16 hex>.sig.<base64url>") keep working mid-conversation."""
    old_id = "call_0123456789abcdef.sig." + base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")
    assert gemini.signature_from_id(old_id) == value
    body = gemini.build_request(loop_request(None, ids=(old_id,)), GEM3, "gemini:aaaa")
    assert call_signatures(body) == [value]


def test_ids_that_carry_no_signature() -> None:
    assert gemini.signature_from_id("call_abc") is None
    assert gemini.signature_from_id("toolu_01XYZ") is None  # ids from other providers pass through
    assert gemini.signature_from_id("call_1.sig.%%%not-base64") is None
    assert gemini.signature_from_id("call_1.sig.__8") is None  # decodes to bytes that are not UTF-8


def test_a_signature_goes_back_only_to_the_credential_and_model_family_that_issued_it() -> None:
    req = loop_request(sig("c2lnQQ=="), sig("c2lnQg==", origin="gemini:bbbb"))
    assert call_signatures(gemini.build_request(req, GEM3, "gemini:aaaa")) == ["c2lnQQ==", DUMMY]
    assert call_signatures(gemini.build_request(req, GEM3, "gemini:bbbb")) == [DUMMY, "c2lnQg=="]
    # next step served by another provider: Cloud Code never gets an API key's signatures
    assert call_signatures(gemini.build_request(req, GEM3, "cloudcode:cccc")) == [DUMMY, DUMMY]
    # another family (pro's signatures on flash) gets the dummy; a release tag of the same one does not
    assert call_signatures(gemini.build_request(req, "gemini-3-flash", "gemini:aaaa")) == [DUMMY, DUMMY]
    assert call_signatures(gemini.build_request(req, "gemini-3-pro", "gemini:aaaa")) == ["c2lnQQ==", DUMMY]
    # Gemini 2.5 does not require them: its own are sent back, nothing is invented
    mixed = loop_request(sig("c2lnQQ==", model="gemini-2.5-flash"), sig("c2lnQg==", origin="gemini:bbbb"))
    assert call_signatures(gemini.build_request(mixed, "gemini-2.5-flash", "gemini:aaaa")) == ["c2lnQQ==", None]


def test_the_dummy_fills_only_the_current_turns_first_calls() -> None:
    """History from another model or client (ids unknown to the store): Gemini 3 needs a signature
    on the first call of each step after the last user text; earlier turns need none."""
    req = loop_request(None, None, follow_up="and now?")
    req.messages += loop_request(None).messages[1:]  # one more step after the new user text
    req.messages[1].tool_calls.append(c.ToolCall("call_par", "lookup", "{}"))  # a parallel call
    req.messages.insert(3, c.Message("tool", [c.TextPart("{}")], tool_call_id="call_par"))
    body = gemini.build_request(req, GEM3, "gemini:aaaa")
    assert call_signatures(body) == [None, None, None, DUMMY]  # old turn untouched, current turn filled
    emulator_accepts(body, GEM3)
    everywhere = gemini.build_request(req, GEM3, "gemini:aaaa", trust_signatures=False)
    assert call_signatures(everywhere) == [DUMMY, None, DUMMY, DUMMY]  # first call of every step
    assert call_signatures(gemini.build_request(req, "gemini-2.5-pro")) == [None] * 4


def test_untrusted_rebuild_sends_no_stored_signature_at_all() -> None:
    req = loop_request(sig("c2lnQQ=="))
    req.messages[1].content.insert(0, c.ReasoningPart("thinking", sig("c2lnUg==")))
    trusted = gemini.build_request(req, GEM3, "gemini:aaaa")
    assert trusted["contents"][1]["parts"][0] == {"text": "thinking", "thought": True, "thoughtSignature": "c2lnUg=="}
    plain = gemini.build_request(req, GEM3, "gemini:aaaa", trust_signatures=False)
    assert plain["contents"][1]["parts"] == [{"functionCall": {"name": "lookup", "args": {}},
                                              "thoughtSignature": DUMMY}]
    # a thought from another credential is dropped with its signature, and Gemini's turns stay valid
    other = gemini.build_request(req, GEM3, "gemini:bbbb")
    assert [p.get("thought") for p in other["contents"][1]["parts"]] == [None]


def test_client_rewritten_ids_and_googles_extra_content() -> None:
    """A client that invents its own ids gets the dummy; one that echoes Google's OpenAI-compatible
    `extra_content.google.thought_signature` (ai.google.dev/gemini-api/docs/openai) has it sent."""
    base = [{"role": "user", "content": "go"}]
    call = {"id": "tool_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    result = {"role": "tool", "tool_call_id": "tool_1", "content": "{}"}
    plain = {"model": "m", "tools": LOOKUP_TOOLS, "messages": [*base, {"role": "assistant", "tool_calls": [call]}, result]}
    assert call_signatures(gemini.build_request(chat.parse(plain), GEM3, "gemini:aaaa")) == [DUMMY]
    echoed = {**call, "extra_content": {"google": {"thought_signature": "c2lnRQ=="}}}
    body = {**plain, "messages": [*base, {"role": "assistant", "tool_calls": [echoed]}, result]}
    req = chat.parse(body)
    assert req.messages[1].tool_calls[0].signature == c.Signature("c2lnRQ==")  # origin unknown
    assert call_signatures(gemini.build_request(req, GEM3, "gemini:aaaa")) == ["c2lnRQ=="]


def test_signature_refusals_are_recognised() -> None:
    from addon.protocol.errors import UnusableAnswer, UpstreamError
    corrupted = gemini.error_from(400, b'{"error":{"code":400,"message":"Corrupted thought signature.",'
                                       b'"status":"INVALID_ARGUMENT"}}', {})
    assert gemini.signature_refused(corrupted)
    missing = gemini.error_from(400, json.dumps([{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": (
        "Function call is missing a thought_signature in functionCall parts. This is required for tools to work "
        "correctly, and missing thought_signature may lead to degraded model performance. Additional data, "
        "function call `default_api:lookup` , position 2. Please refer to "
        "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")}}]).encode(), {})
    assert gemini.signature_refused(missing)
    assert gemini.signature_refused(UnusableAnswer("x", reason="MISSING_THOUGHT_SIGNATURE"))
    assert not gemini.signature_refused(UpstreamError(400, "Request contains an invalid argument."))
    assert not gemini.signature_refused(UpstreamError(429, "thought signature quota"))


def test_model_families_and_which_models_need_signatures() -> None:
    assert gemini.model_family("gemini-3-pro-preview") == "gemini-3-pro"
    assert gemini.model_family("models/gemini-2.5-flash-lite-preview-09-2025") == "gemini-2.5-flash-lite"
    assert gemini.model_family("gemini-3-pro-high") == gemini.model_family("gemini-3-pro-low") == "gemini-3-pro"
    assert gemini.model_family("gemini-3-pro-image-preview") != gemini.model_family("gemini-3-pro")
    assert [gemini.needs_signatures(m) for m in ("gemini-3-flash", "gemini-2.5-pro", "models/gemini-4", "gpt-4o")] == [
        True, False, True, False]


def test_gemini3_signature_survives_a_full_round_trip_through_the_emulator() -> None:
    """Emulator answers a call with a signature bound to its credential; the chat client echoes the
    short id; the store's record goes back to that credential only, the dummy to any other."""
    model, state, alice, bob = GEM3, emu.EmulatorState(), "gemini:alice-key", "gemini:bob-key"
    first = {"model": "gpt-5", "tools": LOOKUP_TOOLS, "messages": [{"role": "user", "content": '[[tool:lookup {"q": "x"}]]'}]}
    req1 = chat.parse(first)
    g1 = emulator_accepts(gemini.build_request(req1, model, "gemini:a"), model, state)
    answer = emu.gemini_events(emu.gemini_answer(g1, model, None), model, 1, state, stream=False, credential=alice)[0]
    issued = answer["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    completion = gemini.completion_from(answer, 1, gemini.Reply(origin="gemini:a", model=model))
    rendered = chat.render(completion, req1)
    call = rendered["choices"][0]["message"]["tool_calls"][0]
    assert rendered["choices"][0]["finish_reason"] == "tool_calls" and len(call["id"]) <= 40
    store = {call["id"]: completion.choices[0].tool_calls[0].signature}  # what the engine stores

    second = {**first, "messages": [*first["messages"],
                                    {"role": "assistant", "content": None, "tool_calls": [call]},
                                    {"role": "tool", "tool_call_id": call["id"], "content": '{"hits": 3}'}]}
    req2 = chat.parse(second)
    req2.messages[1].tool_calls[0].signature = store[call["id"]]  # what the engine's hydrate does
    same = gemini.build_request(req2, model, "gemini:a")
    assert call_signatures(same) == [issued]
    g2 = emu.validate_generate_request(json.loads(json.dumps(same)), model, state, credential=alice)
    assert emu.gemini_answer(g2, model, None)[0].text == 'Tool lookup returned: {"hits":3}'
    # the emulator is as strict as Gemini: the same signature from another credential is refused ...
    with pytest.raises(emu.GeminiInvalid, match="^Corrupted thought signature.$"):
        emu.validate_generate_request(json.loads(json.dumps(same)), model, state, credential=bob)
    # ... so the gateway sends the dummy to the other account, which passes
    other = gemini.build_request(req2, model, "gemini:b")
    assert call_signatures(other) == [DUMMY]
    emu.validate_generate_request(json.loads(json.dumps(other)), model, state, credential=bob)
    # and without any signature the emulator refuses, as Gemini 3 does
    unsigned = json.loads(json.dumps(same))
    del unsigned["contents"][1]["parts"][0]["thoughtSignature"]
    with pytest.raises(emu.GeminiInvalid, match="missing a thought_signature.*position 2"):
        emu.validate_generate_request(unsigned, model, state, credential=alice)


def test_signatures_on_thought_and_empty_text_parts_are_kept() -> None:
    """Streams deliver a signature on a thought part, or alone on a part with empty text after the
    answer (pydantic-ai#3481; Code Assist sends "an empty thought part holding only the signature")."""
    dec = gemini.GeminiStreamDecoder(1, gemini.Reply(origin="gemini:aaaa", model=GEM3))
    out = dec.feed_response({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]})
    out += dec.feed_response({"candidates": [{"content": {"parts": [{"text": "", "thoughtSignature": "c2lnVA=="}]},
                                              "finishReason": "STOP"}]})
    assert out[0] == c.TextDelta(0, "Hi")
    assert isinstance(out[1], c.ReasoningDelta) and out[1].text == ""
    assert out[1].signature is not None and (out[1].signature.value, out[1].signature.origin) == ("c2lnVA==", "gemini:aaaa")
    assert out[1].signature.key and out[2] == c.Finish(0, "stop")
    whole = gemini.completion_from({"candidates": [{"content": {"parts": [
        {"text": "plan", "thought": True}, {"text": "", "thought": True, "thoughtSignature": "c2lnVQ=="},
        {"text": "Answer"}]}, "finishReason": "STOP"}]}, 1, gemini.Reply(origin="gemini:aaaa", model=GEM3))
    choice = whole.choices[0]
    assert (choice.text, choice.reasoning) == ("Answer", "plan")
    assert choice.reasoning_signature is not None and choice.reasoning_signature.value == "c2lnVQ=="


# ---- images and media --------------------------------------------------------------------------

def test_images_and_audio() -> None:
    body = build(load(CHAT_DIR / "request_images.json")["request"])
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"text": "What is in these?"}
    assert parts[1]["inlineData"]["mimeType"] == "image/png"
    assert base64.b64decode(parts[1]["inlineData"]["data"]).startswith(b"\x89PNG")
    # Gemini wants fileData.mimeType: guessed from the URL's extension
    assert parts[2] == {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}
    assert parts[3] == {"fileData": {"mimeType": "image/png", "fileUri": "http://example.com/dog.png"}}
    assert parts[4]["inlineData"]["mimeType"] == "audio/wav"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "/etc/passwd", "etc/passwd", "C:\\Windows\\win.ini",
                                 "ftp://example.com/a.png", "FILE:///etc/passwd", "  /etc/passwd",
                                 "data:image/png,not-base64"])
def test_local_paths_and_odd_urls_are_refused(url: str) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": url}}]}]}
    err = err_of(body)
    assert err.status == 400 and err.param == "messages[0].content[1].image_url.url"
    assert "passwd" not in err.message


# ---- generation parameters ---------------------------------------------------------------------

def test_generation_params() -> None:
    spec = load(CHAT_DIR / "request_generation_params.json")
    gen = build(spec["request"])["generationConfig"]
    # gemini-2.5 refuses penalties ("Penalty is not enabled for models/gemini-2.5-flash",
    # PublicAffairs/openai-gemini#63): dropped; a 120-token answer with no reasoning asked for: no thinking
    assert gen == {"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 120, "seed": 42,
                   "stopSequences": ["END", "STOP"], "candidateCount": 2, "thinkingConfig": {"thinkingBudget": 0}}
    # a model the table does not know gets them as they are
    gen = build(spec["request"], "gemma-3-27b-it")["generationConfig"]
    assert gen == {"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 120, "seed": 42, "presencePenalty": 0.5,
                   "frequencyPenalty": -0.25, "stopSequences": ["END", "STOP"], "candidateCount": 2}


@pytest.mark.parametrize("params, expected", [
    ({"max_tokens": 50}, 50),
    ({"max_completion_tokens": 70}, 70),
    ({"max_tokens": 50, "max_completion_tokens": 70}, 70),
    ({"max_completion_tokens": 70, "max_tokens": 500}, 70),
    ({}, None),
])
def test_max_completion_tokens_wins(params: dict[str, int], expected: int | None) -> None:
    gen = build({"model": "m", "messages": user_msg(), **params}).get("generationConfig", {})
    assert gen.get("maxOutputTokens") == expected


def test_stop_n_and_zero_values() -> None:
    gen = build({"model": "m", "messages": user_msg(), "stop": "END", "n": 1, "temperature": 0,
                 "seed": 0, "presence_penalty": 0}, "gemma-3-27b-it")["generationConfig"]
    assert gen == {"stopSequences": ["END"], "temperature": 0, "seed": 0, "presencePenalty": 0}
    assert "generationConfig" not in build({"model": "m", "messages": user_msg(), "stop": None, "n": 1})
    assert err_of({"model": "m", "messages": user_msg(), "stop": ["a", "b", "c", "d", "e"]}).param == "stop"


# ---- response_format, reasoning, tool_choice ----------------------------------------------------

def test_response_format() -> None:
    gen = build(load(CHAT_DIR / "request_json_object.json")["request"])["generationConfig"]
    assert gen == {"responseMimeType": "application/json"}
    gen = build(load(CHAT_DIR / "request_json_schema.json")["request"])["generationConfig"]
    schema = gen["responseJsonSchema"]  # JSON Schema, not the OpenAPI subset (addon/backends/schema.py)
    assert gen["responseMimeType"] == "application/json" and "responseSchema" not in gen
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["properties"]["address"] == {"$ref": "#/$defs/Address"}
    assert schema["$defs"]["Address"]["properties"]["street"] == {"type": "string"}
    assert schema["properties"]["age"] == {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]}
    assert schema["properties"]["kind"] == {"type": "string", "enum": ["person"]}
    assert schema["properties"]["email"] == {"type": "string"}  # format "email" is not on Google's list
    assert schema["required"] == ["name", "age", "kind", "address", "tags"]
    assert "responseSchema" not in build({"model": "m", "messages": user_msg(),
                                          "response_format": {"type": "text"}}).get("generationConfig", {})
    err = err_of({"model": "m", "messages": user_msg(), "response_format": {"type": "json_schema"}})
    assert err.param == "response_format.json_schema"
    err = err_of({"model": "m", "messages": user_msg(), "response_format": {"type": "xml"}})
    assert err.param and err.param.startswith("response_format")


@pytest.mark.parametrize("model, effort, expected", [
    ("gemini-2.5-flash", "minimal", {"thinkingBudget": 512, "includeThoughts": True}),
    ("gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
    ("gemini-2.5-flash", "medium", {"thinkingBudget": 8192, "includeThoughts": True}),
    ("gemini-2.5-pro", "high", {"thinkingBudget": 24576, "includeThoughts": True}),
    ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ("gemini-3-pro-preview", "low", {"thinkingLevel": "low", "includeThoughts": True}),
    ("gemini-3-pro-preview", "high", {"thinkingLevel": "high", "includeThoughts": True}),
    ("gemini-3-flash", "none", {"thinkingLevel": "minimal"}),  # 3 Flash has minimal, 3 Pro does not
    ("gemini-3-pro-preview", "none", {"thinkingLevel": "low"}),
    ("gemini-3-pro-preview", "medium", {"thinkingLevel": "high", "includeThoughts": True}),
    ("gemini-3.1-pro-preview", "medium", {"thinkingLevel": "medium", "includeThoughts": True}),
    ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),  # cannot switch thinking off: its minimum
    ("gemini-2.5-flash-lite", "minimal", {"thinkingBudget": 512, "includeThoughts": True}),
    ("gemini-2.5-flash", None, None),
])
def test_reasoning_effort_to_thinking_config(model: str, effort: str | None, expected: Any) -> None:
    body = {"model": "o3", "messages": user_msg()}
    if effort is not None:
        body["reasoning_effort"] = effort
    built = build(body, model)
    assert built.get("generationConfig", {}).get("thinkingConfig") == expected
    emulator_accepts(built, model)


TOOLS = [{"type": "function", "function": {"name": "a", "parameters": {"type": "object",
                                                                          "properties": {"x": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "b"}},
         {"type": "function", "function": {"name": "c"}}]


def _allowed(mode: str, *fns: str) -> dict[str, Any]:
    return {"type": "allowed_tools", "allowed_tools": {
        "mode": mode, "tools": [{"type": "function", "function": {"name": f}} for f in fns]}}


@pytest.mark.parametrize("choice, expected", [
    (None, None),
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "b"}}, {"mode": "ANY", "allowedFunctionNames": ["b"]}),
    (_allowed("required", "a", "c"), {"mode": "ANY", "allowedFunctionNames": ["a", "c"]}),
    (_allowed("auto", "a", "b"), {"mode": "VALIDATED", "allowedFunctionNames": ["a", "b"]}),
])
def test_tool_choice_variants(choice: Any, expected: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"model": "m", "messages": user_msg(), "tools": TOOLS}
    if choice is not None:
        body["tool_choice"] = choice
    built = build(body)
    decls = built["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in decls] == ["a", "b", "c"]
    assert "parameters" not in decls[1]
    assert built.get("toolConfig") == (None if expected is None else {"functionCallingConfig": expected})
    g = emulator_accepts(built, "gemini-2.5-flash")
    assert g.fc_mode == (expected or {"mode": "AUTO"})["mode"]


@pytest.mark.parametrize("choice", [
    {"type": "function", "function": {"name": "nope"}},
    _allowed("required", "a", "nope"),
    _allowed("auto", "nope"),
])
def test_tool_choice_naming_an_unknown_tool_is_a_400(choice: Any) -> None:
    err = err_of({"model": "m", "messages": user_msg(), "tools": TOOLS, "tool_choice": choice})
    assert err.status == 400 and err.param == "tool_choice" and "nope" in err.message


def test_tool_choice_required_without_tools() -> None:
    assert err_of({"model": "m", "messages": user_msg(), "tool_choice": "required"}).param == "tool_choice"


def test_tool_choice_none_without_tools_is_harmless() -> None:
    built = build({"model": "m", "messages": user_msg(), "tool_choice": "none"})
    assert "tools" not in built and "toolConfig" not in built


# ---- Gemini response -> chat completion ---------------------------------------------------------

RESPONSE_CASES = cases(GEMINI_DIR, "response_")


@pytest.mark.parametrize("case", RESPONSE_CASES)
def test_response_golden(case: str) -> None:
    spec = load(GEMINI_DIR / f"response_{case}.json")
    req, legacy = chat.parse_with_context(spec["request"])
    rendered = chat.render(gemini.completion_from(spec["response"], spec["n"]), req, legacy)
    golden(CHAT_DIR / f"response_{case}.golden.json", normalise(rendered))
    # the SDK's own model accepts it
    from openai.types.chat import ChatCompletion
    ChatCompletion.model_validate(rendered)


def _render(case: str) -> dict[str, Any]:
    spec = load(GEMINI_DIR / f"response_{case}.json")
    req, legacy = chat.parse_with_context(spec["request"])
    return chat.render(gemini.completion_from(spec["response"], spec["n"]), req, legacy)


def test_response_text_thoughts_and_usage() -> None:
    r = _render("text_with_thoughts")
    assert r["id"].startswith("chatcmpl-") and r["object"] == "chat.completion" and r["model"] == "gpt-4o"
    msg = r["choices"][0]["message"]
    assert msg["content"] == "Hello world" and msg["reasoning_content"] == "Let me think."
    assert r["choices"][0]["finish_reason"] == "stop"
    assert r["usage"] == {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22,
                          "prompt_tokens_details": {"cached_tokens": 4},
                          "completion_tokens_details": {"reasoning_tokens": 7}}


def test_response_tool_calls() -> None:
    r = _render("tool_calls")
    ch = r["choices"][0]
    assert ch["finish_reason"] == "tool_calls" and ch["message"]["content"] is None
    calls = ch["message"]["tool_calls"]
    assert [(t["type"], t["function"]["name"], json.loads(t["function"]["arguments"])) for t in calls] == [
        ("function", "get_weather", {"city": "Paris"}), ("function", "get_time", {})]
    assert all(re.fullmatch(r"call_[0-9a-f]{24}", t["id"]) for t in calls)  # the signature is not in the id
    assert calls[0]["id"] != calls[1]["id"]


@pytest.mark.parametrize("raw, tools, expected", [
    ("STOP", False, "stop"), (None, False, "stop"), ("MAX_TOKENS", False, "length"),
    ("SAFETY", False, "content_filter"), ("RECITATION", False, "content_filter"),
    ("PROHIBITED_CONTENT", False, "content_filter"), ("BLOCKLIST", False, "content_filter"),
    ("SPII", False, "content_filter"), ("STOP", True, "tool_calls"),
])
def test_finish_reason_mapping(raw: str | None, tools: bool, expected: str) -> None:
    assert gemini.finish_reason(raw, tools) == expected


def test_finish_reasons_end_to_end() -> None:
    assert _render("max_tokens")["choices"][0]["finish_reason"] == "length"
    safety = _render("safety")["choices"][0]
    assert safety["finish_reason"] == "content_filter" and safety["message"]["content"] == ""
    blocked = _render("blocked_prompt")
    assert [ch["finish_reason"] for ch in blocked["choices"]] == ["content_filter", "content_filter"]
    assert [ch["index"] for ch in blocked["choices"]] == [0, 1]
    two = _render("two_candidates")
    assert [(ch["index"], ch["message"]["content"], ch["finish_reason"]) for ch in two["choices"]] == [
        (0, "one", "stop"), (1, "two", "length")]


def test_usage_from_metadata() -> None:
    u = gemini.usage_from({"promptTokenCount": 10, "toolUsePromptTokenCount": 2, "candidatesTokenCount": 5,
                           "thoughtsTokenCount": 7, "cachedContentTokenCount": 3})
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens, u.cached_tokens, u.total_tokens) == (12, 12, 7, 3, 24)
    assert gemini.usage_from(None) == c.Usage() and gemini.usage_from({}).total_tokens == 0
    assert chat.usage_json(u)["completion_tokens_details"] == {"reasoning_tokens": 7}


# ---- Gemini SSE -> chat chunks ---------------------------------------------------------------

STREAM_CASES = cases(GEMINI_DIR, "stream_")


@pytest.mark.parametrize("case", STREAM_CASES)
async def test_stream_golden(case: str) -> None:
    spec = load(GEMINI_DIR / f"stream_{case}.json")
    raw = await translate_stream(spec["request"], [sse_bytes(spec["events"])])
    events = parse_client_sse(raw)
    check_chunk_rules(events, bool((spec["request"].get("stream_options") or {}).get("include_usage")))
    golden(CHAT_DIR / f"stream_{case}.golden.json", normalise(events))
    # splitting the upstream bytes anywhere changes nothing but ids
    for seed in range(3):
        again = parse_client_sse(await translate_stream(spec["request"], split_randomly(sse_bytes(spec["events"]), seed)))
        assert normalise(again) == normalise(events)


async def _stream(case: str) -> list[Any]:
    spec = load(GEMINI_DIR / f"stream_{case}.json")
    return parse_client_sse(await translate_stream(spec["request"], [sse_bytes(spec["events"])]))


def _content(events: list[Any], index: int = 0) -> str:
    return "".join(ch["choices"][0]["delta"].get("content") or "" for ch in events
                   if isinstance(ch, dict) and ch.get("choices") and ch["choices"][0]["index"] == index)


async def test_stream_text_thoughts_and_usage() -> None:
    events = await _stream("text_usage")
    assert _content(events) == "Hello ✓ wörld!"
    reasoning = [ch["choices"][0]["delta"]["reasoning_content"] for ch in events[:-1]
                 if ch["choices"] and "reasoning_content" in ch["choices"][0]["delta"]]
    assert reasoning == ["Planning..."]
    assert events[-2]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10,
                                   "prompt_tokens_details": {"cached_tokens": 0},
                                   "completion_tokens_details": {"reasoning_tokens": 2}}
    final = accumulate(events)
    assert final.choices[0].message.content == "Hello ✓ wörld!" and final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.total_tokens == 10


async def test_stream_without_include_usage_has_no_usage() -> None:
    events = await _stream("text_no_usage")
    assert all("usage" not in e for e in events if isinstance(e, dict))
    assert [e["choices"][0]["finish_reason"] for e in events[:-1]] == [None, None, "stop"]


async def test_stream_tool_calls_are_header_then_arguments() -> None:
    events = await _stream("tool_calls")
    deltas = [(tc["index"], tc) for ch in events if isinstance(ch, dict) and ch.get("choices")
              for tc in ch["choices"][0]["delta"].get("tool_calls", [])]
    assert [i for i, _ in deltas] == [0, 0, 1, 1, 2, 2]  # parallel calls get distinct indexes
    for k in range(3):
        header, args = deltas[2 * k][1], deltas[2 * k + 1][1]
        assert header["function"]["arguments"] == "" and header["id"].startswith("call_")
        assert args == {"index": k, "function": {"arguments": args["function"]["arguments"]}}
    final = accumulate(events)
    calls = final.choices[0].message.tool_calls
    assert [(t.function.name, json.loads(t.function.arguments)) for t in calls] == [
        ("get_weather", {"city": "Paris", "days": [1, 2]}), ("get_weather", {"city": "Oslo"}), ("get_time", {})]
    assert all(len(t.id) == 29 for t in calls) and len({t.id for t in calls}) == 3
    assert final.choices[0].finish_reason == "tool_calls" and final.choices[0].message.content == "Checking."


async def test_stream_two_candidates() -> None:
    events = await _stream("two_candidates")
    assert _content(events, 0) == "A1A2" and _content(events, 1) == "B1B2"
    final = accumulate(events)
    assert [(ch.index, ch.finish_reason) for ch in final.choices] == [(0, "stop"), (1, "length")]


async def test_stream_finish_reasons() -> None:
    assert [e["choices"][0]["finish_reason"] for e in (await _stream("max_tokens"))[:-1]][-1] == "length"
    assert [e["choices"][0]["finish_reason"] for e in (await _stream("safety"))[:-1]][-1] == "content_filter"
    blocked = await _stream("blocked_prompt")
    assert blocked[0]["choices"][0] == {"index": 0, "delta": {"role": "assistant"}, "logprobs": None,
                                        "finish_reason": "content_filter"}
    assert blocked[-2]["usage"]["prompt_tokens"] == 3 and blocked[-1] == "[DONE]"


async def test_incomplete_stream_is_an_error_not_a_silent_eof() -> None:
    events = await _stream("incomplete")
    assert _content(events) == "Hello wor"
    assert events[-1]["error"]["code"] == "upstream_stream_error" and "[DONE]" not in events
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])
    events = await _stream("error_event")
    assert events[-1]["error"]["code"] == "upstream_stream_error" and "overloaded" in events[-1]["error"]["message"]


async def test_stream_cut_mid_event_is_incomplete() -> None:
    spec = load(GEMINI_DIR / "stream_text_no_usage.json")
    data = sse_bytes(spec["events"])
    events = parse_client_sse(await translate_stream(spec["request"], [data[: len(data) - 30]]))
    assert "error" in events[-1] and "[DONE]" not in events


def test_decoder_directly() -> None:
    dec = gemini.GeminiStreamDecoder(1)
    out = dec.feed_response({"candidates": [{"content": {"parts": [
        {"text": "hm", "thought": True, "thoughtSignature": "c2ln"}, {"text": "", "thought": True},
        {"text": "A"}, {"functionCall": {"name": "f", "args": {"x": 1}}}, {"text": ""}]}}]})
    assert isinstance(out[0], c.ReasoningDelta) and out[0].text == "hm" and out[0].signature.value == "c2ln"
    assert out[1] == c.TextDelta(0, "A")
    assert isinstance(out[2], c.ToolCallDelta) and out[2].name == "f" and out[2].arguments == "" and out[2].id
    assert out[2].signature is None  # no signature came with it
    assert out[3] == c.ToolCallDelta(0, 0, '{"x": 1}')
    assert len(out) == 4 and not dec.complete
    out = dec.feed_response({"candidates": [{"content": {"parts": [{"functionCall": {"name": "g"}}]}, "finishReason": "STOP"}],
                    "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3}})
    assert out[0].call_index == 1 and out[1] == c.ToolCallDelta(0, 1, "{}")
    assert out[2] == c.Finish(0, "tool_calls") and dec.complete
    assert dec.feed_response({"candidates": [{"finishReason": "STOP"}]}) == []  # a repeated finish is ignored
    assert dec.finish() == [c.UsageUpdate(c.Usage(2, 3))]


# ---- ChatStreamEncoder rules ----------------------------------------------------------------------

def _encoder(include_usage: bool) -> chat.ChatStreamEncoder:
    body: dict[str, Any] = {"model": "gpt-4o", "stream": True, "messages": user_msg()}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return chat.ChatStreamEncoder(chat.parse(body))


@pytest.mark.parametrize("include_usage", [False, True])
def test_encoder_rules(include_usage: bool) -> None:
    enc = _encoder(include_usage)
    out = enc.start()
    for ev in [c.TextDelta(0, "a"), c.TextDelta(0, ""), c.TextDelta(1, "x"), c.ReasoningDelta(0, "r"),
               c.ToolCallDelta(0, 0, "", id="call_1", name="f"), c.ToolCallDelta(0, 0, '{"a"'),
               c.ToolCallDelta(0, 0, ": 1}"), c.ToolCallDelta(0, 1, "{}", id="call_2", name="g"),
               c.Finish(0, "tool_calls"), c.Finish(1, "stop"), c.UsageUpdate(c.Usage(3, 4, 1, 2))]:
        out += enc.feed(ev)
    out += enc.close()
    events = parse_client_sse(out)
    check_chunk_rules(events, include_usage)
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "a"}
    assert chunks[1]["choices"][0] == {"index": 1, "delta": {"role": "assistant", "content": "x"},
                                       "logprobs": None, "finish_reason": None}
    assert chunks[2]["choices"][0]["delta"] == {"reasoning_content": "r"}
    assert chunks[3]["choices"][0]["delta"] == {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}
    assert chunks[4]["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}
    assert chunks[6]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_2"
    assert chunks[7]["choices"][0]["finish_reason"] == "tool_calls" and chunks[7]["choices"][0]["delta"] == {}
    if include_usage:
        assert chunks[-1]["usage"] == chat.usage_json(c.Usage(3, 4, 1, 2)) and chunks[-1]["choices"] == []
        assert len(chunks) == 10
    else:
        assert len(chunks) == 9
    assert out.endswith(b"data: [DONE]\n\n")
    final = accumulate(events)
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"a": 1}'


def test_encoder_ids_are_fresh_per_stream_and_fail_shape() -> None:
    a, b = _encoder(False), _encoder(False)
    ida = json.loads(a.feed(c.TextDelta(0, "x"))[6:])["id"]
    idb = json.loads(b.feed(c.TextDelta(0, "x"))[6:])["id"]
    assert ida != idb
    failed = a.fail(GatewayError(502, "boom", code="upstream_stream_error"))
    assert failed.startswith(b"data: ") and failed.endswith(b"\n\n")
    assert json.loads(failed[6:]) == {"error": {"message": "boom", "type": "server_error", "param": None,
                                                "code": "upstream_stream_error"}}


# ---- SSE parser ----------------------------------------------------------------------------------

def test_sse_parser_crlf_lf_comments_and_fields() -> None:
    p = SSEParser()
    raw = (b": keep-alive\r\n\r\n"
           b"data: {\"a\":1}\r\n\r\n"
           b"event: ping\ndata: x\ndata:y\n\n"
           b"id: 7\nretry: 10\ndata: z\n\n"
           b"data\n\n"
           b":comment only\n\n")
    assert p.feed(raw) == [SSEEvent('{"a":1}'), SSEEvent("x\ny", "ping"), SSEEvent("z"), SSEEvent("")]
    assert p.flush() == []


@pytest.mark.parametrize("seed", range(8))
def test_sse_parser_split_anywhere(seed: int) -> None:
    events = [{"text": "héllo ✓"}, {"n": 2}, {"s": "a\u2028b"}]
    raw = b": hi\r\n\r\n" + sse_bytes(events) + b"data: last"  # no blank line at the very end
    p = SSEParser()
    got: list[SSEEvent] = []
    for piece in split_randomly(raw, seed) + [b""]:
        got += p.feed(piece)
    got += p.flush()
    assert [json.loads(e.data) for e in got[:3]] == events and got[3] == SSEEvent("data: last"[6:])


def test_sse_parser_byte_at_a_time_and_cr_between_chunks() -> None:
    raw = b"data: {\"k\": \"\xe2\x9c\x93\"}\r\n\r\ndata: 2\r\n\r\n"
    p = SSEParser()
    got = [e for i in range(len(raw)) for e in p.feed(raw[i:i + 1])]
    assert [e.data for e in got] == ['{"k": "✓"}', "2"]


# ---- request validation errors ---------------------------------------------------------------------

@pytest.mark.parametrize("body, param", [
    ({"messages": user_msg()}, "model"),
    ({"model": "", "messages": user_msg()}, "model"),
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": "hi"}, "messages"),
    ({"model": "m", "messages": [{"role": "bogus", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}, {"content": "x"}]}, "messages[1].role"),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content[0].type"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"model": "m", "messages": user_msg(), "temperature": 3}, "temperature"),
    ({"model": "m", "messages": user_msg(), "temperature": -0.1}, "temperature"),
    ({"model": "m", "messages": user_msg(), "temperature": "hot"}, "temperature"),
    ({"model": "m", "messages": user_msg(), "top_p": 1.5}, "top_p"),
    ({"model": "m", "messages": user_msg(), "n": 0}, "n"),
    ({"model": "m", "messages": user_msg(), "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "messages": user_msg(), "presence_penalty": 3}, "presence_penalty"),
    ({"model": "m", "messages": user_msg(), "reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"model": "m", "messages": user_msg(), "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "m", "messages": user_msg(), "stream": False, "stream_options": {"include_usage": True}},
     "stream_options"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
])
def test_request_validation_errors(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as info:
        chat.parse(body)
    err = info.value
    assert err.status == 400 and err.param == param, (err.param, err.message)
    payload = err.payload()["error"]
    assert payload["type"] == "invalid_request_error" and payload["message"] and payload["code"]


def test_body_that_is_not_an_object() -> None:
    for body in ([1, 2], "x", None, 3):
        with pytest.raises(GatewayError) as info:
            chat.parse(body)
        assert info.value.status == 400 and info.value.code == "invalid_json"


def test_unknown_fields_are_tolerated() -> None:
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "x", "vendor": 1}],
                      "metadata": {"a": "b"}, "store": True, "service_tier": "auto", "logprobs": False})
    assert req.messages[0].text() == "x"
