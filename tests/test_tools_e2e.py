"""Tools and grounding end to end: the official `openai` SDK -> a real mitmdump with the addon -> the
emulator (strict like Gemini / OpenAI about what these features send).

Freeform (custom) tools over a Responses stream, legacy chat `functions`, web search (chat
`web_search_options`, Responses `web_search`) with url_citation annotations, Gemini safety settings
from the accounts file, and an OpenAI-compatible account serving reasoning-model names.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Emulator, Gateway, GatewayFactory, gemini_accounts

pytestmark = pytest.mark.e2e

PATCH = "*** Begin Patch\n*** Add File: notes.txt\n+naïve café\n*** End Patch\n"
APPLY_PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
               "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" /(.|\\n)+/'}}
LOOKUP = {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
TEXT = "Le café à Zürich coûte 5 €. 東京 est moins cher."
GROUNDING = {"queries": ["prix du café"],
             "sources": [{"uri": "https://example.org/zurich", "title": "example.org"},
                         {"uri": "https://example.jp/tokyo", "title": "example.jp"}],
             "supports": [{"text": "Le café à Zürich coûte 5 €.", "sources": [0]},
                          {"text": "東京 est moins cher.", "sources": [1]}]}


def generate_calls(emulator: Emulator) -> list[dict[str, Any]]:
    return [r["body"] for r in emulator.log() if "enerateContent" in r["path"]]


# ---- freeform tools (Responses) ----------------------------------------------------------------


# A Gemini 2.x model (no thought signatures; web search and functions do not mix)
GEMINI_2 = "gemini-2.5-flash-lite"


def test_custom_tool_round_trip_over_a_responses_stream(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"times": 1, "reply": {"function_calls": [{"name": "apply_patch", "args": {"input": PATCH}}]}},
                   {"times": 1, "reply": {"text": "Patched."}})
    client = gateway.openai()
    with client.responses.stream(model=GEMINI_2, input="Write notes.txt", tools=[APPLY_PATCH]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.custom_tool_call_input.delta" in kinds and "response.custom_tool_call_input.done" in kinds
    [call] = final.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch" and call.input == PATCH
    decl = generate_calls(emulator)[0]["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "apply_patch" and list(decl["parametersJsonSchema"]["properties"]) == ["input"]

    # the client replays the call (without id, as Codex does) and its output
    second = client.responses.create(model=GEMINI_2, tools=[APPLY_PATCH], input=[
        {"role": "user", "content": "Write notes.txt"},
        {"type": "custom_tool_call", "call_id": call.call_id, "name": "apply_patch", "input": call.input},
        {"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Success."}])
    assert second.output_text == "Patched."
    contents = generate_calls(emulator)[1]["contents"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "apply_patch", "args": {"input": PATCH}}}]
    assert contents[2]["parts"][0]["functionResponse"]["response"] == {"content": "Success."}


# ---- legacy chat functions ---------------------------------------------------------------------


def test_legacy_functions_answer_with_function_call(gateway: Gateway, emulator: Emulator) -> None:
    call = {"times": 1, "reply": {"function_calls": [{"name": "lookup", "args": {"q": "cats"}}]}}
    emulator.rules(call, call)
    client = gateway.openai()
    messages = [{"role": "user", "content": "find cats"}]
    done = client.chat.completions.create(model="gpt-4o", messages=messages, functions=[LOOKUP])
    choice = done.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call.name == "lookup" and choice.message.function_call.arguments == '{"q": "cats"}'

    chunks = list(client.chat.completions.create(model="gpt-4o", messages=messages, functions=[LOOKUP], stream=True))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    assert deltas[0].function_call.name == "lookup" and not any(d.tool_calls for d in deltas)
    assert "".join(d.function_call.arguments for d in deltas if d.function_call) == '{"q": "cats"}'
    assert chunks[-1].choices[0].finish_reason == "function_call"


# ---- web search --------------------------------------------------------------------------------


def test_chat_web_search_options_give_url_citations(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"times": 1, "reply": {"text": TEXT, "grounding": GROUNDING}})
    done = gateway.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Le café coûte combien ?"}],
        web_search_options={"search_context_size": "low"})
    msg = done.choices[0].message
    assert generate_calls(emulator)[0]["tools"] == [{"googleSearch": {}}]
    cited = [(TEXT[a.url_citation.start_index:a.url_citation.end_index], a.url_citation.url) for a in msg.annotations]
    assert cited == [("Le café à Zürich coûte 5 €.", "https://example.org/zurich"),
                     ("東京 est moins cher.", "https://example.jp/tokyo")]


def test_responses_web_search_stream_and_create(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"times": 1, "reply": {"text": TEXT, "grounding": GROUNDING, "chunks": [TEXT[:20], TEXT[20:]]}})
    client = gateway.openai()
    with client.responses.stream(model=GEMINI_2, input="Café ?", tools=[{"type": "web_search"}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds.count("response.output_text.annotation.added") == 2 and "response.web_search_call.completed" in kinds
    message = next(i for i in final.output if i.type == "message")
    search = next(i for i in final.output if i.type == "web_search_call")
    notes = message.content[0].annotations
    cited = [TEXT[n.start_index:n.end_index] for n in notes]
    assert cited == ["Le café à Zürich coûte 5 €.", "東京 est moins cher."]
    assert search.status == "completed" and search.action.queries == ["prix du café"]

    # without a rule the emulator grounds any answer to a request that offers the search
    plain = client.responses.create(model=GEMINI_2, input="Anything new?", tools=[{"type": "web_search_preview"}])
    assert plain.output[0].type == "web_search_call" and plain.output[1].content[0].annotations


def test_web_search_next_to_functions(gateway: Gateway, emulator: Emulator) -> None:
    tools = [{"type": "function", "name": "lookup", "parameters": LOOKUP["parameters"]}, {"type": "web_search"}]
    client = gateway.openai()
    # Gemini 2.x refuses the mix: the search is left out, the request succeeds
    assert client.responses.create(model=GEMINI_2, input="hi", tools=tools).output_text
    assert [list(t) for t in generate_calls(emulator)[-1]["tools"]] == [["functionDeclarations"]]
    # Gemini 3 combines them with includeServerSideToolInvocations
    assert client.responses.create(model="gemini-3-pro-preview", input="hi", tools=tools).output_text
    body = generate_calls(emulator)[-1]
    assert {"googleSearch": {}} in body["tools"] and body["toolConfig"]["includeServerSideToolInvocations"] is True


# ---- safety settings ---------------------------------------------------------------------------


def test_safety_settings_from_the_accounts_file(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "safe") + "safety_settings: BLOCK_NONE\n")
    gw.openai().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    settings = generate_calls(emulator)[-1]["safetySettings"]
    assert {s["threshold"] for s in settings} == {"BLOCK_NONE"} and len(settings) == 4
    # a category Gemini does not take stops the gateway at startup, not every request later
    with pytest.raises(RuntimeError, match="exited early"):
        gateways.start(gemini_accounts(emulator.url, "unsafe") + "safety_settings: [{category: X, threshold: OFF}]\n")
    assert "safety_settings[0].category 'X' is not one Gemini accepts" in gateways.running[-1].log()


# ---- OpenAI-compatible upstream with reasoning-model names --------------------------------------


def test_openai_upstream_gets_max_completion_tokens_and_proper_media_parts(
        gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(f"""
accounts:
  - provider: openai
    label: oai
    base_url: {emulator.url}/openai/v1
    api_key: sk-oai
""", mappings_yaml='mappings:\n  "gpt-*": ~\n  "o3*": ~\n')
    client = gw.openai()
    for model in ("gpt-5", "o3-mini"):  # the emulator refuses max_tokens for these, like OpenAI
        done = client.chat.completions.create(model=model, max_tokens=40,
                                              messages=[{"role": "user", "content": "hi"}])
        assert done.choices[0].message.content
        body = emulator.log()[-1]["body"]
        assert body["max_completion_tokens"] == 40 and "max_tokens" not in body
    client.chat.completions.create(model="gpt-4o", max_tokens=40, messages=[{"role": "user", "content": [
        {"type": "text", "text": "listen"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]}])
    body = emulator.log()[-1]["body"]
    assert body["max_tokens"] == 40  # a generic upstream (vLLM, Ollama) keeps the field they all read
    assert [p["type"] for p in body["messages"][0]["content"]] == ["text", "input_audio", "file"]
