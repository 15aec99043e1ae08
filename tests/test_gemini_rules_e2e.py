"""Requests real clients send, against an upstream as strict as Google's, end to end: the official
`openai` SDK -> a real mitmdump with the addon -> the emulator (which refuses what Google refuses,
and checks every body with the google-genai oracle).

MCP tool lists and pydantic tool schemas, names Gemini would refuse, small `max_tokens` on thinking
models, penalties, `n` on Gemini 3, the names Antigravity users bring, and the startup check of the
mapping targets against the upstream's model list.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from tests.conftest import Emulator, Gateway, GatewayFactory, gemini_accounts
from tests.golden import load

pytestmark = pytest.mark.e2e

MCP = load(Path(__file__).parent / "fixtures" / "schemas" / "mcp_tools.json")["tools"]


def upstream_calls(emulator: Emulator) -> list[dict[str, Any]]:
    return [r for r in emulator.log() if r["path"].endswith(("generateContent", "GenerateContent"))]


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                              "parameters": t["inputSchema"]}} for t in tools]


class Filters(BaseModel):
    labels: dict[str, str] = {}
    since: str | None = None


class SearchArgs(BaseModel):
    query: str = Field(description="What to look for")
    filters: Filters | None = None
    limit: int = 10


# ---- schemas and names ----------------------------------------------------------------------------

def test_an_mcp_tool_list_works_end_to_end(gateway: Gateway, emulator: Emulator) -> None:
    args = {"path": "/tmp/notes.txt", "edits": [{"oldText": "a", "newText": "b"}]}
    done = gateway.openai().chat.completions.create(
        model="gpt-4o", tools=chat_tools(MCP),  # type: ignore[arg-type]
        messages=[{"role": "user", "content": f"[[tool:filesystem_edit_file {json.dumps(args)}]]"}])
    [call] = done.choices[0].message.tool_calls or []
    assert call.function.name == "filesystem/edit_file" and json.loads(call.function.arguments) == args
    sent = upstream_calls(emulator)[-1]["body"]["tools"][0]["functionDeclarations"]
    assert len(sent) == len(MCP) and all("parametersJsonSchema" in d for d in sent)


def test_a_pydantic_tool_schema_works_end_to_end(gateway: Gateway, emulator: Emulator) -> None:
    tool = {"type": "function", "function": {"name": "search", "parameters": SearchArgs.model_json_schema()}}
    args = {"query": "cats", "filters": {"labels": {"kind": "pet"}}}
    client = gateway.openai()
    for model in ("gpt-4o", "gemini-3.5-flash"):
        ask = [{"role": "user", "content": f"[[tool:search {json.dumps(args)}]]"}]
        done = client.chat.completions.create(model=model, tools=[tool], messages=ask)  # type: ignore
        [call] = done.choices[0].message.tool_calls or []
        assert json.loads(call.function.arguments) == args
    schema = upstream_calls(emulator)[-1]["body"]["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]
    assert "Filters" in schema["$defs"]  # pydantic's $defs/$ref reach Gemini as they are


ODD = "my tool/v2!"
ODD_TOOL = {"type": "function", "function": {"name": ODD, "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}


def test_an_odd_tool_name_round_trips_in_a_chat_stream(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    messages: list[Any] = [{"role": "user", "content": '[[tool:my_tool_v2_ {"q": "x"}]]'}]
    with client.chat.completions.stream(model="gpt-4o", messages=messages, tools=[ODD_TOOL]) as stream:  # type: ignore
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.name == ODD and final.choices[0].finish_reason == "tool_calls"
    messages += [final.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "found"}]
    again = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[ODD_TOOL],  # type: ignore
                                           tool_choice={"type": "function", "function": {"name": ODD}})
    assert again.choices[0].message.content == 'Tool my_tool_v2_ returned: {"content":"found"}'
    body = upstream_calls(emulator)[-1]["body"]
    assert body["contents"][1]["parts"][0]["functionCall"]["name"] == "my_tool_v2_"
    assert body["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == ["my_tool_v2_"]


def test_an_odd_tool_name_round_trips_in_responses(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    tool = {"type": "function", "name": ODD, "parameters": ODD_TOOL["function"]["parameters"]}
    first = client.responses.create(model="gpt-4o", tools=[tool],  # type: ignore[list-item]
                                    input='[[tool:my_tool_v2_ {"q": "y"}]]')
    [call] = [i for i in first.output if i.type == "function_call"]
    assert call.name == ODD
    ask = '[[tool:my_tool_v2_ {"q": "z"}]]'
    with client.responses.stream(model="gpt-4o", tools=[tool], input=ask) as s:  # type: ignore[list-item]
        events = list(s)
        streamed = s.get_final_response()
    assert [i.name for i in streamed.output if i.type == "function_call"] == [ODD]
    assert [e.item.name for e in events if e.type == "response.output_item.added"
            and e.item.type == "function_call"] == [ODD]
    second = client.responses.create(model="gpt-4o", tools=[tool], previous_response_id=first.id,  # type: ignore
                                     input=[{"type": "function_call_output", "call_id": call.call_id, "output": "ok"}])
    assert second.output_text.startswith("Tool my_tool_v2_ returned")


# ---- thinking and small limits ----------------------------------------------------------------------

def test_a_30_token_title_on_a_thinking_model_has_text(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    for model, stream in (("gemini-2.5-flash", False), ("gpt-4o", True), ("gemini-2.5-pro", False),
                          ("gemini-3.5-flash", False)):
        if stream:
            chunks = list(client.chat.completions.create(model=model, max_tokens=30, stream=True,
                                                         messages=[{"role": "user", "content": "Title please"}]))
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        else:
            text = client.chat.completions.create(model=model, max_tokens=30, messages=[
                {"role": "user", "content": "Title please"}]).choices[0].message.content or ""
        assert text.startswith("Echo("), (model, text)
    assert upstream_calls(emulator)[0]["body"]["generationConfig"] == {
        "maxOutputTokens": 30, "thinkingConfig": {"thinkingBudget": 0}}


def test_legacy_completions_default_16_tokens_has_text(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    for model in ("gemini-2.5-flash", "gemini-3.1-pro-preview"):
        done = client.completions.create(model=model, prompt="Once upon a time there was")
        assert done.choices[0].text.startswith("Echo("), (model, done)


def test_a_visible_limit_with_reasoning_still_gets_its_answer(gateway: Gateway, emulator: Emulator) -> None:
    done = gateway.openai().chat.completions.create(
        model="gemini-2.5-flash", max_tokens=5, reasoning_effort="low",
        messages=[{"role": "user", "content": "one two three four five six seven eight"}])
    choice = done.choices[0]
    # the emulator answers 9 words within the raised maxOutputTokens; the gateway cuts to about 5 tokens
    # by the answer's characters per token (the upstream reports tokens, not where they end)
    text = choice.message.content or ""
    assert text.startswith("Echo(gemini-2.5-flash): one") and len(text.split()) <= 5
    assert choice.finish_reason == "length" and choice.message.reasoning_content  # type: ignore[attr-defined]
    sent = upstream_calls(emulator)[-1]["body"]["generationConfig"]
    assert sent["maxOutputTokens"] == 5 + 1024 and sent["thinkingConfig"]["thinkingBudget"] == 1024


# ---- penalties, n, JSON mode with tools --------------------------------------------------------------

def test_presence_penalty_on_25_is_answered(gateway: Gateway, emulator: Emulator) -> None:
    done = gateway.openai().chat.completions.create(model="gemini-2.5-flash", presence_penalty=0.5,
                                                    frequency_penalty=0.3,
                                                    messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "Echo(gemini-2.5-flash): hi"
    assert "presencePenalty" not in json.dumps(upstream_calls(emulator)[-1]["body"])


def test_n_2_on_gemini_3_gives_two_choices(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    done = client.chat.completions.create(model="gemini-3.5-flash", n=2, seed=4,
                                          messages=[{"role": "user", "content": "hi"}])
    assert [c.index for c in done.choices] == [0, 1]
    assert all(c.message.content == "Echo(gemini-3.5-flash): hi" for c in done.choices)
    calls = upstream_calls(emulator)
    assert len(calls) == 2 and {c["body"]["generationConfig"].get("seed") for c in calls} == {4, 5}
    assert all("candidateCount" not in c["body"].get("generationConfig", {}) for c in calls)
    chunks = list(client.chat.completions.create(model="gemini-3.5-flash", n=2, stream=True,
                                                 stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "hey"}]))
    texts: dict[int, str] = {}
    for ch in chunks:
        for c in ch.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
    assert texts == {0: "Echo(gemini-3.5-flash): hey", 1: "Echo(gemini-3.5-flash): hey"}
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 2  # both calls added up
    legacy = client.completions.create(model="gemini-3.5-flash", prompt="x", n=2)
    assert sorted(c.index for c in legacy.choices) == [0, 1]


def test_json_mode_with_tools_on_25_is_answered(gateway: Gateway, emulator: Emulator) -> None:
    done = gateway.openai().chat.completions.create(
        model="gemini-2.5-flash", tools=[ODD_TOOL], response_format={"type": "json_object"},  # type: ignore
        messages=[{"role": "user", "content": "give me json"}])
    assert done.choices[0].message.content
    body = upstream_calls(emulator)[-1]["body"]
    assert "responseMimeType" not in body.get("generationConfig", {})
    assert "JSON" in json.dumps(body["systemInstruction"])


# ---- the names people bring, and the startup check ---------------------------------------------------

def test_antigravity_names_map_to_real_models_with_their_level(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    raw = client.chat.completions.with_raw_response.create(model="gemini-3-pro-high",
                                                           messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-mapped-model"] == "gemini-3.1-pro-preview"
    assert raw.parse().model == "gemini-3-pro-high"
    call = upstream_calls(emulator)[-1]
    assert call["path"] == "/v1beta/models/gemini-3.1-pro-preview:generateContent"
    assert call["body"]["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "high"}
    client.chat.completions.create(model="gemini-3-pro-low", messages=[{"role": "user", "content": "hi"}])
    assert upstream_calls(emulator)[-1]["body"]["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "low"}
    raw = client.chat.completions.with_raw_response.create(model="gemini-3-flash",
                                                           messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-mapped-model"] == "gemini-3.8-flash"


def test_startup_warns_about_targets_the_upstream_does_not_serve(gateways: GatewayFactory,
                                                                 emulator: Emulator) -> None:
    mappings = """
default: gemini-2.5-flash
mappings:
  gpt-4o: gemini-3.8-flash
  old: gemini-3-pro-preview
  typo: {model: gemini-3.1-pro-previw, thinking_level: high}
  "gemini-*": ~
"""
    gw = gateways.start(gemini_accounts(emulator.url, "alice"), mappings_yaml=mappings, check_models=True)
    deadline = time.monotonic() + 10
    while "does not serve" not in gw.log():
        assert time.monotonic() < deadline, gw.log()[-2000:]
        time.sleep(0.1)
    line = next(ln for ln in gw.log().splitlines() if "does not serve" in ln)
    assert "gemini-3-pro-preview" in line and "gemini-3.1-pro-previw" in line
    assert "gemini-3.8-flash" not in line
    # what Google does with each name that is no longer current
    assert "gemini-3-pro-preview (shut down on 2026-03-09 (Google's replacement: gemini-3.1-pro-preview))" in line
    assert "gemini-2.5-flash (deprecated: Google answers it from gemini-3.5-flash-lite since 2026-12-01)" in line
    assert [r["path"] for r in emulator.log()] == ["/v1beta/models"]  # once, and nothing else
    # the gateway serves meanwhile, the check never blocks it
    assert gw.openai().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
