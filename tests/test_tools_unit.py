"""Pure tests of the tool and grounding translations: freeform (custom) tools, legacy `functions`,
Google Search grounding -> url_citation, images in tool results, OpenAI-compatible upstream fields,
Gemini safety settings and the Codex model catalog; plus the emulator rules that back them.

Goldens for these live with the other translator goldens (tests/fixtures/{responses,gemini,chat}/,
cases *custom_tool*, *grounding*, *legacy_function_call*, *web_search*); the tool-result image
golden is tests/fixtures/gemini/tool_result_images.golden.json.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from addon.pool.accounts_file import parse_accounts
from addon.backends import gemini
from addon.backends import openai as openai_upstream
from addon.config.codex_catalog import codex_catalog
from addon.frontends import chat
from addon.frontends.common import custom_input
from addon.frontends.responses import ResponsesFrontend
from addon.protocol import canonical as c
from addon.protocol.errors import GatewayError
from addon.stores.response_store import MemoryResponseStore
from addon.config.safety import parse_safety_settings
from tests import emulator as emu
from tests.emulator import start
from tests.golden import golden, load

FIXTURES = Path(__file__).parent / "fixtures"
RESP_DIR, GEMINI_DIR = FIXTURES / "responses", FIXTURES / "gemini"
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+héllo wörld\n*** End Patch\n"


def accepted(body: dict[str, Any], model: str) -> emu.GenRequest:
    try:
        return emu.validate_generate_request(json.loads(json.dumps(body)), model, emu.EmulatorState())
    except emu.GeminiInvalid as exc:
        pytest.fail(f"the emulator rejects the request: {exc.message}")


def refused(body: dict[str, Any], model: str) -> str:
    with pytest.raises(emu.GeminiInvalid) as info:
        emu.validate_generate_request(json.loads(json.dumps(body)), model, emu.EmulatorState())
    return info.value.message


def responses_parse(body: dict[str, Any], front: ResponsesFrontend | None = None) -> tuple[c.ChatRequest, Any]:
    return asyncio.run((front or ResponsesFrontend(MemoryResponseStore())).parse(body))


# ---- freeform (custom) tools: Codex's apply_patch ------------------------------------------------


def test_custom_tool_goes_upstream_as_a_function_with_one_string() -> None:
    spec = load(RESP_DIR / "request_custom_tool_round_trip.json")
    req, ctx = responses_parse(spec["request"])
    body = gemini.build_request(req, spec["upstream_model"])
    accepted(body, spec["upstream_model"])
    decl = next(d for d in body["tools"][0]["functionDeclarations"] if d["name"] == "apply_patch")
    assert decl["parametersJsonSchema"] == {"type": "object", "properties": {"input": {
        "description": "The raw input text of the tool.", "type": "string"}}, "required": ["input"]}
    assert "FREEFORM" in decl["description"] and "*** Begin Patch" in decl["description"], "the grammar rides along"
    # the replayed custom_tool_call (no id, as Codex sends it) and its output pair up as Gemini wants
    call, result = body["contents"][1]["parts"][0], body["contents"][2]["parts"][0]
    assert call == {"functionCall": {"name": "apply_patch", "args": {"input": PATCH}}}
    assert result["functionResponse"]["name"] == "apply_patch"
    assert "Success" in result["functionResponse"]["response"]["content"]
    assert ctx.plan.customs() == {"apply_patch"}
    # Codex's default web_search (cached index only) is not turned into a live Google Search
    assert req.web_search is False and all("googleSearch" not in t for t in body["tools"])


def test_custom_tool_call_comes_back_as_custom_tool_call_item() -> None:
    spec = load(RESP_DIR / "response_custom_tool_call.json")
    front = ResponsesFrontend(MemoryResponseStore())
    req, ctx = responses_parse(spec["request"], front)
    obj = front.render(gemini.completion_from(spec["upstream"]), req, ctx)
    [item] = obj["output"]
    assert item["type"] == "custom_tool_call" and item["input"] == PATCH and item["name"] == "apply_patch"
    assert item["id"].startswith("ctc_") and item["call_id"].startswith("call_") and item["status"] == "completed"
    Response.model_validate(obj)
    # continuing with previous_response_id replays it upstream as the same function call
    asyncio.run(front.settle(ctx))
    output = {"type": "custom_tool_call_output", "call_id": item["call_id"], "output": "Done"}
    nxt, _ = responses_parse({"model": "gpt-5-codex", "previous_response_id": obj["id"],
                              "tools": spec["request"]["tools"], "input": [output]}, front)
    body = gemini.build_request(nxt, "gemini-2.5-flash")
    accepted(body, "gemini-2.5-flash")
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "apply_patch", "args": {"input": PATCH}}}]


def test_custom_tool_stream_events() -> None:
    events = load(RESP_DIR / "stream_custom_tool_call.golden.json")
    kinds = [e["type"] for e in events]
    start = kinds.index("response.custom_tool_call_input.delta")
    assert kinds[start - 1] == "response.output_item.added" and events[start - 1]["item"]["input"] == ""
    assert kinds[start:start + 3] == ["response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
                                      "response.output_item.done"]
    assert events[start]["delta"] == events[start + 1]["input"] == PATCH
    assert events[start + 2]["item"]["type"] == "custom_tool_call" and events[start + 2]["item"]["input"] == PATCH
    assert not any(k.startswith("response.function_call_arguments") for k in kinds)


def test_function_call_arguments_done_carries_the_name() -> None:
    events = load(RESP_DIR / "stream_reasoning_text_tools.golden.json")
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [e["name"] for e in done] == ["get_weather", "get_time"]


@pytest.mark.parametrize("arguments, text", [
    ('{"input": "raw"}', "raw"),
    ('{"patch": "raw"}', "raw"),  # the model named the one parameter differently
    ("not json", "not json"),
    ("{}", ""),
])
def test_custom_input_unwraps_the_function_form(arguments: str, text: str) -> None:
    assert custom_input(arguments) == text


def test_custom_tool_choice_is_kept() -> None:
    req, _ = responses_parse({"model": "m", "input": "hi", "tools": [{"type": "custom", "name": "apply_patch"}],
                              "tool_choice": {"type": "custom", "name": "apply_patch"}})
    assert req.tool_choice == c.ToolChoice("required", ("apply_patch",))


# ---- legacy chat `functions` -------------------------------------------------------------------


def test_legacy_functions_get_function_call_back() -> None:
    rendered = load(FIXTURES / "chat" / "response_legacy_function_call.golden.json")
    choice = rendered["choices"][0]
    assert choice["finish_reason"] == "function_call" and "tool_calls" not in choice["message"]
    assert choice["message"]["function_call"] == {"name": "lookup", "arguments": '{"q": "cats"}'}
    ChatCompletion.model_validate(rendered)
    # with `tools` (even next to `functions`) the modern shape stays
    req, legacy = chat.parse_with_context({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                           "functions": [{"name": "f"}],
                                           "tools": [{"type": "function", "function": {"name": "g"}}]})
    assert legacy is False and [t.name for t in req.tools] == ["g", "f"]


def test_legacy_function_call_stream() -> None:
    events = load(FIXTURES / "chat" / "stream_legacy_function_call.golden.json")
    deltas = [e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e["choices"]]
    calls = [d["function_call"] for d in deltas if "function_call" in d]
    assert calls[0]["name"] == "lookup" and "".join(x["arguments"] for x in calls) == '{"q": "cats"}'
    assert not any("tool_calls" in d for d in deltas), "one legacy call; the parallel second one is dropped"
    assert events[-2]["choices"][0]["finish_reason"] == "function_call"


# ---- grounding -> url_citation -------------------------------------------------------------------


def test_grounding_byte_offsets_become_character_offsets() -> None:
    spec = load(RESP_DIR / "response_grounding.json")
    text = spec["upstream"]["candidates"][0]["content"]["parts"][0]["text"]
    supports = spec["upstream"]["candidates"][0]["groundingMetadata"]["groundingSupports"]
    assert supports[1]["segment"]["startIndex"] != text.index("東京"), "the fixture's offsets really are bytes"
    ch = gemini.completion_from(spec["upstream"]).choices[0]
    assert ch.grounding is not None
    spans = [(x.start, x.end, x.url[-3:], x.title) for x in ch.grounding.citations]
    assert spans == [(0, 27, "AAA", "zuerich.ch"), (0, 27, "CCC", "vertexaisearch.cloud.google.com"),
                     (28, 46, "BBB", "tokyo.jp")]
    assert [text[s:e] for s, e, *_ in spans] == ["Le café à Zürich coûte 5 €."] * 2 + ["東京 est moins cher."]
    assert ch.grounding.queries == ["prix café Zürich", "prix café Tokyo"]


def test_responses_grounding_shapes() -> None:
    obj = load(RESP_DIR / "response_grounding.golden.json")
    search, message = obj["output"]
    assert search["type"] == "web_search_call" and search["status"] == "completed"
    assert search["action"]["queries"] == ["prix café Zürich", "prix café Tokyo"]
    assert len(search["action"]["sources"]) == 3
    notes = message["content"][0]["annotations"]
    assert {(n["type"], n["start_index"], n["end_index"]) for n in notes} == {("url_citation", 0, 27),
                                                                            ("url_citation", 28, 46)}
    Response.model_validate(obj)
    events = load(RESP_DIR / "stream_grounding.golden.json")
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert [e["annotation_index"] for e in added] == [0, 1, 2] and added[2]["annotation"]["start_index"] == 28
    assert events[-1]["response"]["output"][1]["type"] == "web_search_call"


def test_chat_grounding_shapes() -> None:
    rendered = load(FIXTURES / "chat" / "response_grounding.golden.json")
    notes = rendered["choices"][0]["message"]["annotations"]
    assert notes[2] == {"type": "url_citation", "url_citation": {
        "start_index": 28, "end_index": 46, "url": "https://vertexaisearch.cloud.google.com/grounding-api-redirect/BBB",
        "title": "tokyo.jp"}}
    assert ChatCompletion.model_validate(rendered).choices[0].message.annotations[0].url_citation.end_index == 27
    events = load(FIXTURES / "chat" / "stream_grounding.golden.json")
    assert [d["annotations"] for e in events if isinstance(e, dict) and e["choices"]
            for d in [e["choices"][0]["delta"]] if "annotations" in d] == [notes]


def test_grounding_segment_text_wins_over_offsets_that_miss() -> None:
    meta = {"groundingChunks": [{"web": {"uri": "https://a.example/x", "title": "a.example"}}],
            "groundingSupports": [{"segment": {"startIndex": 3, "endIndex": 9, "text": "wörld"},
                                   "groundingChunkIndices": [0]},
                                  {"segment": {"endIndex": 999}, "groundingChunkIndices": [0]},  # out of range
                                  {"segment": {"endIndex": 2}, "groundingChunkIndices": [7]}]}  # no such chunk
    grounding = gemini.grounding_from(meta, "hé wörld")
    assert grounding is not None and [(x.start, x.end) for x in grounding.citations] == [(3, 8)]
    assert gemini.grounding_from({}, "x") is None and gemini.grounding_from(None, "x") is None


def test_web_search_requests() -> None:
    only = load(RESP_DIR / "request_web_search.golden.json")
    assert only["tools"] == [{"googleSearch": {}}] and "toolConfig" not in only
    both = load(RESP_DIR / "request_web_search_with_functions_gemini3.golden.json")
    assert both["tools"][1] == {"googleSearch": {}} and both["toolConfig"] == {"includeServerSideToolInvocations": True}
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}], "web_search_options": {}})
    assert gemini.build_request(req, "gemini-2.5-flash")["tools"] == [{"googleSearch": {}}]


def test_search_next_to_functions_is_dropped_before_gemini_3(caplog: pytest.LogCaptureFixture) -> None:
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}], "web_search_options": {},
                      "tools": [{"type": "function", "function": {"name": "f"}}]})
    body = gemini.build_request(req, "gemini-2.5-pro")
    accepted(body, "gemini-2.5-pro")
    assert [list(t) for t in body["tools"]] == [["functionDeclarations"]]
    body3 = gemini.build_request(req, "gemini-3-flash")
    accepted(body3, "gemini-3-flash")
    assert {"googleSearch": {}} in body3["tools"]


# ---- images in tool results ----------------------------------------------------------------------

PNG = "iVBORw0KGgo="
TOOL_IMAGE_CHAT = {"model": "gpt-4o", "messages": [
    {"role": "user", "content": "Take a screenshot"},
    {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                          "function": {"name": "screenshot", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": [
        {"type": "text", "text": "captured"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}],
    "tools": [{"type": "function", "function": {"name": "screenshot"}}]}
TOOL_IMAGE_RESPONSES = {"model": "gpt-4o", "tools": [{"type": "function", "name": "screenshot"}], "input": [
    {"role": "user", "content": "Take a screenshot"},
    {"type": "function_call", "call_id": "call_1", "name": "screenshot", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": [
        {"type": "input_text", "text": "captured"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "high"}]}]}


def _signed(body: dict[str, Any]) -> dict[str, Any]:
    """Gemini 3 wants the call's thought signature back; the documented dummy stands in (signatures
    are another test's concern)."""
    for content in body["contents"]:
        for part in content["parts"]:
            if "functionCall" in part:
                part["thoughtSignature"] = "skip_thought_signature_validator"
    return body


def test_images_in_tool_results_per_model() -> None:
    out: dict[str, Any] = {}
    for model in ("gemini-2.5-flash", "gemini-3-pro-preview"):
        body = _signed(gemini.build_request(chat.parse(TOOL_IMAGE_CHAT), model))
        accepted(body, model)
        via_responses = _signed(gemini.build_request(responses_parse(TOOL_IMAGE_RESPONSES)[0], model))
        assert via_responses["contents"] == body["contents"], "both front ends carry the image the same way"
        out[model] = body["contents"][2:]  # what follows the model's call turn
    golden(GEMINI_DIR / "tool_result_images.golden.json", out)
    image = {"inlineData": {"mimeType": "image/png", "data": PNG}}
    old, new = out["gemini-2.5-flash"], out["gemini-3-pro-preview"]
    assert old[0]["parts"] == [{"functionResponse": {"name": "screenshot", "response": {"content": "captured"}}}]
    assert old[1] == {"role": "user", "parts": [{"text": "(images returned by screenshot)"}, image]}
    assert new == [{"role": "user", "parts": [{"functionResponse": {
        "name": "screenshot", "response": {"content": "captured"}, "parts": [image]}}]}]
    # what the older models refuse, the emulator refuses with Google's text
    call_turn = {"role": "model", "parts": [{"functionCall": {"name": "screenshot", "args": {}}}]}
    assert "function_response.parts` is not supported" in refused(
        {"contents": [{"role": "user", "parts": [{"text": "x"}]}, call_turn, new[0]]}, "gemini-2.5-flash")


# ---- OpenAI-compatible upstreams -----------------------------------------------------------------


@pytest.mark.parametrize("model, base_url, setting, field", [
    ("gpt-5", "http://127.0.0.1:8000/v1", "auto", "max_completion_tokens"),
    ("o3-mini", "http://localhost:11434/v1", "auto", "max_completion_tokens"),
    ("gpt-4o", "https://api.openai.com/v1", "auto", "max_completion_tokens"),
    ("my-deployment", "https://res.openai.azure.com/openai/v1", "auto", "max_completion_tokens"),
    ("llama3.2", "http://localhost:11434/v1", "auto", "max_tokens"),  # Ollama reads only max_tokens
    ("gpt-4o", "http://127.0.0.1:8000/v1", "auto", "max_tokens"),
    ("gpt-5", "http://127.0.0.1:8000/v1", "max_tokens", "max_tokens"),  # the account says so
    ("llama3.2", "http://localhost:8000/v1", "max_completion_tokens", "max_completion_tokens"),
])
def test_token_limit_field(model: str, base_url: str, setting: Any, field: str) -> None:
    assert openai_upstream.limit_field(model, base_url, setting) == field
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 30})
    body = openai_upstream.build_request(req, model, False, limit=field)
    assert body[field] == 30 and ({"max_tokens", "max_completion_tokens"} - {field}).isdisjoint(body)


def test_audio_and_files_are_their_own_openai_parts() -> None:
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "listen and read"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "doc.pdf"}},
        {"type": "file", "file": {"file_data": "JVBERi0="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})
    parts = openai_upstream.build_request(req, "gpt-4o", False)["messages"][0]["content"]
    assert parts[1:] == [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "doc.pdf"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "file.pdf"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    # Responses input_file by URL: Chat Completions has no file_url
    resp_req, _ = responses_parse({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_file", "file_url": "https://example.com/a.pdf"}]}]})
    with pytest.raises(GatewayError) as info:
        openai_upstream.build_request(resp_req, "gpt-4o", False)
    assert info.value.status == 400 and "inline" in info.value.message


def test_tool_result_images_follow_in_a_user_message_for_openai_upstreams() -> None:
    messages = openai_upstream.build_request(chat.parse(TOOL_IMAGE_CHAT), "gpt-4o", False)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert messages[2]["content"] == "captured"
    assert messages[3]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}


# ---- safety settings -----------------------------------------------------------------------------


def test_safety_settings_are_checked_at_load_and_sent() -> None:
    shorthand = parse_safety_settings("BLOCK_NONE")
    assert [s["category"] for s in shorthand] == ["HARM_CATEGORY_HARASSMENT", "HARM_CATEGORY_HATE_SPEECH",
                                                 "HARM_CATEGORY_SEXUALLY_EXPLICIT", "HARM_CATEGORY_DANGEROUS_CONTENT"]
    for bad, why in ((["BLOCK_NONE"], "exactly the keys"), ("NEVER", "not one of"),
                     ([{"category": "HARM_CATEGORY_DEROGATORY", "threshold": "OFF"}], "not one Gemini accepts"),
                     ([{"category": "HARM_CATEGORY_JAILBREAK", "threshold": "OFF"}], "not one Gemini accepts"),
                     ([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}] * 2, "twice")):
        with pytest.raises(ValueError, match=why):
            parse_safety_settings(bad)
    accounts = parse_accounts({"safety_settings": "OFF", "accounts": [
        {"provider": "gemini", "label": "a", "api_key": "k"},
        {"provider": "gemini", "label": "b", "api_key": "k",
         "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]},
        {"provider": "openai", "label": "c", "base_url": "http://x/v1"}]})
    a, b, _ = accounts.accounts
    assert a.safety_settings == parse_safety_settings("OFF") and len(b.safety_settings) == 1
    with pytest.raises(ValueError, match="safety_settings"):
        parse_accounts({"accounts": [{"provider": "gemini", "api_key": "k", "safety_settings": "LOW"}]})
    req = chat.parse({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    body = gemini.build_request(req, "gemini-2.5-flash", safety=b.safety_settings)
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
    accepted(body, "gemini-2.5-flash")
    assert "HarmCategory" in refused({**body, "safetySettings": [{"category": "HARASSMENT", "threshold": "OFF"}]},
                                     "gemini-2.5-flash")


# ---- Codex model catalog -------------------------------------------------------------------------


def test_codex_catalog_offers_freeform_apply_patch() -> None:
    [info] = codex_catalog(["gpt-5-codex"], lambda name: "gemini-2.5-pro")
    assert info["slug"] == "gpt-5-codex" and info["apply_patch_tool_type"] == "freeform"
    assert info["context_window"] == 1_048_576 and info["shell_type"] == "unified_exec"
    assert "apply_patch" in info["base_instructions"], "without instructions Codex would send an empty prompt"
    # the fields Codex's ModelInfo requires (codex-rs/protocol/src/openai_models.rs)
    assert {"slug", "display_name", "supported_reasoning_levels", "shell_type", "visibility", "supported_in_api",
            "priority", "base_instructions", "support_verbosity", "truncation_policy", "supports_parallel_tool_calls",
            "experimental_supported_tools"} <= info.keys()
    upstream = {"gpt-5": "gemini-2.5-pro", "text-embedding-3-small": "gemini-embedding-001"}
    assert [i["slug"] for i in codex_catalog(list(upstream), upstream.__getitem__)] == ["gpt-5"]  # no embedders


# ---- emulator rules ------------------------------------------------------------------------------

SEARCH_AND_FUNCTIONS = {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                        "tools": [{"functionDeclarations": [{"name": "f"}]}, {"googleSearch": {}}]}


def test_emulator_search_with_functions_rules() -> None:
    assert refused(SEARCH_AND_FUNCTIONS, "gemini-2.5-flash") == "Tool use with function calling is unsupported"
    assert "include_server_side_tool_invocations" in refused(SEARCH_AND_FUNCTIONS, "gemini-3-pro-preview")
    ok = accepted({**SEARCH_AND_FUNCTIONS, "toolConfig": {"includeServerSideToolInvocations": True}},
                  "gemini-3-pro-preview")
    assert ok.google_search and ok.declared == {"f"}


async def test_emulator_answers_grounded_with_byte_offsets() -> None:
    runner, url = await start()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            text = "Zürich: 東京 café."
            await client.post("/__control/rules", json={"rules": [{"times": 1, "reply": {"text": text, "grounding": {
                "queries": ["q"], "sources": [{"uri": "https://a.example", "title": "a"}],
                "supports": [{"text": "東京 café.", "sources": [0]}]}}}]})
            r = await client.post("/v1beta/models/gemini-2.5-flash:generateContent", headers={"x-goog-api-key": "k"},
                                  json={"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                                        "tools": [{"googleSearch": {}}]})
            meta = r.json()["candidates"][0]["groundingMetadata"]
            seg = meta["groundingSupports"][0]["segment"]
            assert (seg["startIndex"], seg["endIndex"]) == (len("Zürich: ".encode()), len(text.encode()))
            grounding = gemini.grounding_from(meta, text)
            assert grounding is not None and text[grounding.citations[0].start:] == "東京 café."
            # without a googleSearch tool, nothing is grounded
            plain = await client.post("/v1beta/models/gemini-2.5-flash:generateContent",
                                      headers={"x-goog-api-key": "k"},
                                      json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
            assert "groundingMetadata" not in plain.json()["candidates"][0]
    finally:
        await runner.cleanup()


async def test_emulator_openai_refuses_max_tokens_for_reasoning_models_and_audio_as_image() -> None:
    runner, url = await start()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5, headers={"authorization": "Bearer k"}) as client:
            msgs = [{"role": "user", "content": "hi"}]
            r = await client.post("/openai/v1/chat/completions", json={"model": "gpt-5", "messages": msgs,
                                                                       "max_tokens": 5})
            assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_parameter"
            assert r.json()["error"]["message"].startswith("Unsupported parameter: 'max_tokens'")
            r = await client.post("/openai/v1/chat/completions", json={"model": "gpt-5", "messages": msgs,
                                                                       "max_completion_tokens": 5})
            assert r.status_code == 200
            audio = [{"role": "user", "content": [{"type": "image_url",
                                                   "image_url": {"url": "data:audio/wav;base64,UklGRg=="}}]}]
            r = await client.post("/openai/v1/chat/completions", json={"model": "gpt-4o", "messages": audio})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image_format"
    finally:
        await runner.cleanup()
