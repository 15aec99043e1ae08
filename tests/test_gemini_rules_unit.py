"""Gemini's request rules, both sides: what the emulator refuses (with Google's texts, each from
the public issue or doc named next to it) and how the translator keeps real requests clear of them:
function names, thinking and the output budget, penalties, several candidates, tools with JSON mode.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from addon.backends import gemini
from addon.backends.gemini.models import nearest_level, rules_for
from addon.backends.gemini.names import ToolNames
from addon.frontends import chat, completions, responses
from addon.protocol import canonical as c
from addon.protocol.errors import UpstreamError
from addon.upstream.fanout import all_or_none, merge_completions, merge_streams, singles
from tests import emulator as emu

NAME_RULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


def user(text: str = "hi") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def accept(body: dict[str, Any], model: str, state: emu.EmulatorState | None = None) -> emu.GenRequest:
    try:
        return emu.validate_generate_request(json.loads(json.dumps(body)), model, state or emu.EmulatorState())
    except emu.GeminiInvalid as exc:
        pytest.fail(f"{model} refuses the request: {exc.message}")


def refusal(body: dict[str, Any], model: str, flavor: str = "gemini") -> str:
    with pytest.raises(emu.GeminiInvalid) as info:
        emu.validate_generate_request(json.loads(json.dumps(body)), model, emu.EmulatorState(), flavor)
    return info.value.message


def gen(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": config, **extra}


# ---- the emulator refuses what Google refuses ----------------------------------------------------

TOOLS_F = [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {"type": "object", "properties": {}}}]}]


@pytest.mark.parametrize("model, body, text", [
    # penalties: PublicAffairs/openai-gemini#63, BerriAI/litellm#16907
    ("gemini-2.5-flash", gen({"presencePenalty": 0.5}), "Penalty is not enabled for models/gemini-2.5-flash"),
    ("gemini-3.5-flash", gen({"frequencyPenalty": 0.1}), "Penalty is not enabled for models/gemini-3.5-flash"),
    # several candidates on Gemini 3: googleapis/js-genai#1609
    ("gemini-3.1-pro-preview", gen({"candidateCount": 2}), "Multiple candidates is not enabled for this model"),
    # tools with JSON mode before Gemini 3: python-genai#867, symfony/ai#1777
    ("gemini-2.5-flash", gen({"responseMimeType": "application/json"}, tools=TOOLS_F),
     "Function calling with a response mime type: 'application/json' is unsupported"),
    # thinking: ChatLunaLab/chatluna#519, Roo-Code#4399 and #10700, chatwise-releases#1206, eclipse-peon-ai#115
    ("gemini-2.5-pro", gen({"thinkingConfig": {"thinkingBudget": 0}}),
     "Budget 0 is invalid. This model only works in thinking mode."),
    ("gemini-2.5-pro", gen({"thinkingConfig": {"thinkingBudget": 64}}), "The thinking budget (64) is invalid."),
    ("gemini-2.5-flash", gen({"thinkingConfig": {"thinkingBudget": 52428}}), "The thinking budget (52428) is invalid."),
    ("gemini-2.5-flash-lite", gen({"thinkingConfig": {"thinkingBudget": 100}}),
     "The thinking budget (100) is invalid."),
    ("gemini-2.5-flash", gen({"thinkingConfig": {"thinkingLevel": "low"}}),
     "Thinking level is not supported for this model."),
    ("gemini-3.1-pro-preview", gen({"thinkingConfig": {"thinkingLevel": "minimal"}}),
     "Thinking level MINIMAL is not supported for this model. Please retry with other thinking level."),
    ("gemini-3-pro-preview", gen({"thinkingConfig": {"thinkingLevel": "medium"}}), "Thinking level MEDIUM is not"),
    ("gemini-3.8-flash", gen({"thinkingConfig": {"thinkingLevel": "minimal"}}), "Thinking level MINIMAL is not"),
    ("gemini-3-flash-preview", gen({"thinkingConfig": {"thinkingLevel": "low", "thinkingBudget": 1024}}),
     "You can only set only one of thinking budget and thinking level."),
    ("gemini-3.5-flash-lite", gen({"thinkingConfig": {"thinkingBudget": 0}}),
     "Budget 0 is invalid."),  # python-genai#2936
    # shapes: cline#7339 (names), chatwise#250 (empty parts), one-api#1385 (roles), LibreChat#5525 (response list)
    ("gemini-2.5-flash", {"contents": [{"role": "user", "parts": [{"text": "x"}]}],
                          "tools": [{"functionDeclarations": [{"name": "my tool/v2!"}]}]}, "Invalid function name."),
    ("gemini-2.5-flash", {"contents": [{"role": "user", "parts": []}]}, "contents.parts must not be empty."),
    ("gemini-2.5-flash", {"contents": [{"role": "user", "parts": [{}]}]},
     "data: required oneof field 'data' must have one initialized field"),
    ("gemini-2.5-flash", {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
     "Please use a valid role: user, model."),
    ("gemini-2.5-flash", {"contents": [
        {"role": "user", "parts": [{"text": "q"}]}, {"role": "model", "parts": [{"functionCall": {"name": "f"}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": [1, 2]}}]}]},
     "Proto field is not repeating, cannot start list."),
])
def test_the_emulator_refuses_with_googles_text(model: str, body: dict[str, Any], text: str) -> None:
    assert text in refusal(body, model)


@pytest.mark.parametrize("props, text", [
    ({"webhook": {"description": "no type"}}, "parameters.properties[webhook].type: must be specified when not "
                                              "using one_of, any_of or all_of fields"),  # LibreChat#6971
    ({"env": {"type": "OBJECT"}}, "parameters.properties[env].properties: should be non-empty for OBJECT type"),
    ({"time_ranges": {"type": "ARRAY"}}, "parameters.properties[time_ranges].items: missing field."),  # cline#7926
    ({"s": {"type": "STRING", "items": {"type": "STRING"}}}, "field predicate failed: $type == Type.ARRAY"),
    ({"d": {"type": "STRING", "properties": {"a": {"type": "STRING"}}}}, "properties: only allowed for OBJECT type"),
    ({"e": {"type": "STRING", "format": "email"}}, "only 'enum' and 'date-time' are supported for STRING type"),
    ({"x": {"type": "STRING", "additionalProperties": False}}, 'Unknown name "additionalProperties"'),
])
def test_the_openapi_schema_path_is_as_strict_as_google(props: dict[str, Any], text: str) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "tools": [{"functionDeclarations": [
        {"name": "f", "parameters": {"type": "OBJECT", "properties": props}}]}]}
    assert text in refusal(body, "gemini-2.5-flash")


def test_cloud_code_words_some_refusals_its_own_way() -> None:
    # gemini-cli-openai#23 and gemini-cli#14025: the v1internal backend's texts
    assert refusal(gen({"thinkingConfig": {"thinkingBudget": 0}}), "gemini-2.5-pro", "cloudcode") == \
        "The model does not support setting thinking_budget to 0."
    assert "thinking_level is not supported by this model" in refusal(
        gen({"thinkingConfig": {"thinkingLevel": "high"}}), "gemini-2.5-pro", "cloudcode")


def test_tools_with_json_mode_are_fine_on_gemini_3_and_with_mode_none() -> None:
    accept(gen({"responseMimeType": "application/json"}, tools=TOOLS_F), "gemini-3.5-flash")
    accept(gen({"responseMimeType": "application/json"}, tools=TOOLS_F,
               toolConfig={"functionCallingConfig": {"mode": "NONE"}}), "gemini-2.5-flash")  # google/adk-python#5735


def test_the_oracle_catches_what_the_emulator_rules_miss() -> None:
    # `thinkingConfig.thinkingTokens` is not a field: the emulator's own list catches it...
    made_up = gen({"thinkingConfig": {"thinkingTokens": 5}})
    assert 'Unknown name "thinkingTokens"' in refusal(made_up, "gemini-2.5-flash")
    # ...and google-genai's types catch a misspelt field the emulator's lists do not look into
    body = gen({"speechConfig": {"languageCode": "en-US", "speakerVoice": "Kore"}})
    assert "google-genai oracle" in refusal(body, "gemini-2.5-flash")
    assert "speakerVoice" in refusal(body, "gemini-2.5-flash")


def test_thinking_eats_the_output_budget_in_the_emulator() -> None:
    """python-genai#2062 / ha-llmvision#609: thought tokens count against maxOutputTokens."""
    req = accept(gen({"maxOutputTokens": 30}), "gemini-2.5-flash")
    [ans] = emu.gemini_answer(req, "gemini-2.5-flash", None)
    assert ans.text == "" and ans.finish == "MAX_TOKENS" and ans.thought_tokens == 30
    [event] = emu.gemini_events([ans], "gemini-2.5-flash", 1, emu.EmulatorState(), stream=False)
    assert event["candidates"][0]["content"] == {"role": "model"}
    assert event["usageMetadata"]["thoughtsTokenCount"] == 30
    off = accept(gen({"maxOutputTokens": 30, "thinkingConfig": {"thinkingBudget": 0}}), "gemini-2.5-flash")
    assert emu.gemini_answer(off, "gemini-2.5-flash", None)[0].text.startswith("Echo(")


# ---- function names ----------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("get_weather", "get_weather"),
    ("ns.tool:v1-beta", "ns.tool:v1-beta"),
    ("my tool/v2!", "my_tool_v2_"),
    ("1st", "_1st"),
    ("-dash", "_-dash"),
    ("дата", "____"),
    ("", "_"),
])
def test_names_are_sanitised(name: str, expected: str) -> None:
    assert ToolNames([name]).up(name) == expected


def test_names_are_collision_free_length_capped_and_deterministic() -> None:
    long = "mcp__some-server__" + "x" * 80
    names = ToolNames(["a b", "a_b", "a/b", long, long + "y"])
    ups = [names.up(n) for n in ("a b", "a_b", "a/b", long, long + "y")]
    assert len(set(ups)) == 5 and all(NAME_RULE.match(u) for u in ups)
    assert names.up("a_b") == "a_b"  # a valid name is never renamed
    assert len(names.up(long)) == 64 and names.up(long).startswith("mcp__some-server__")
    assert [ToolNames(["a b", "a_b", "a/b", long, long + "y"]).up(n) for n in ("a b", "a/b", long)] == \
        [ups[0], ups[2], ups[3]]
    assert all(names.down(u) == n for u, n in zip(ups, ("a b", "a_b", "a/b", long, long + "y"), strict=True))


def test_names_round_trip_through_chat_history_tool_choice_and_answers() -> None:
    tools = [{"type": "function", "function": {"name": "my tool/v2!", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}, {"type": "function", "function": {"name": "ok"}}]
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                                                      "function": {"name": "my tool/v2!", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "done"}]
    req = chat.parse({"model": "gpt-4o", "messages": messages, "tools": tools,
                      "tool_choice": {"type": "function", "function": {"name": "my tool/v2!"}}})
    body, reply = gemini.prepare(req, "gemini-2.5-flash")
    accept(body, "gemini-2.5-flash")
    assert [d["name"] for d in body["tools"][0]["functionDeclarations"]] == ["my_tool_v2_", "ok"]
    assert body["contents"][1]["parts"][0]["functionCall"]["name"] == "my_tool_v2_"
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "my_tool_v2_"
    assert body["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == ["my_tool_v2_"]
    answer = {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"name": "my_tool_v2_", "args": {"q": "x"}}}]}, "finishReason": "STOP"}]}
    done = gemini.completion_from(answer, 1, reply)
    assert done.choices[0].tool_calls[0].name == "my tool/v2!"
    decoder = gemini.GeminiStreamDecoder(1, reply)
    events = decoder.feed(json.dumps(answer))
    assert [e.name for e in events if isinstance(e, c.ToolCallDelta) and e.name] == ["my tool/v2!"]


def test_names_round_trip_through_responses_items() -> None:
    async def parse() -> c.ChatRequest:
        front = responses.ResponsesFrontend(__import__("addon.stores.response_store", fromlist=["x"]).MemoryResponseStore())
        req, _ = await front.parse({"model": "gpt-5", "tools": [{"type": "function", "name": "fs/read file"}],
                                    "input": [{"role": "user", "content": "q"},
                                              {"type": "function_call", "call_id": "c1", "name": "fs/read file",
                                               "arguments": "{}"},
                                              {"type": "function_call_output", "call_id": "c1", "output": "x"}]})
        return req
    req = asyncio.run(parse())
    body, _ = gemini.prepare(req, "gemini-2.5-flash")
    accept(body, "gemini-2.5-flash")
    assert body["contents"][1]["parts"][0]["functionCall"]["name"] == "fs_read_file"


# ---- thinking and the output budget -------------------------------------------------------------

def plan(model: str, **kw: Any) -> gemini.OutputPlan:
    return gemini.output_plan(chat.parse({"model": "x", "messages": user(), **kw}), model)


@pytest.mark.parametrize("model, kw, thinking, max_out, visible", [
    # no reasoning asked and a small answer: thinking off, or the minimum where it cannot be off
    ("gemini-2.5-flash", {"max_tokens": 30}, {"thinkingBudget": 0}, 30, None),
    ("gemini-2.5-pro", {"max_tokens": 30}, {"thinkingBudget": 128}, 158, 30),
    ("gemini-2.5-flash-lite", {"max_tokens": 30}, None, 30, None),  # thinks only when asked
    ("gemini-3.5-flash", {"max_tokens": 30}, {"thinkingLevel": "minimal"}, 1054, 30),
    ("gemini-3.1-pro-preview", {"max_tokens": 30}, {"thinkingLevel": "low"}, 4126, 30),
    ("gemini-3.8-flash", {"max_tokens": 30}, {"thinkingLevel": "low"}, 4126, 30),  # no minimal there
    # reasoning asked for: its budget on top of the visible limit
    ("gemini-2.5-flash", {"max_tokens": 30, "reasoning_effort": "low"},
     {"thinkingBudget": 1024, "includeThoughts": True}, 1054, 30),
    ("gemini-3.5-flash", {"max_tokens": 2000, "reasoning_effort": "high"},
     {"thinkingLevel": "high", "includeThoughts": True}, 26576, 2000),
    # xhigh where the model takes it (Gemini 4 Hydrogen, Neon), else the nearest level (high)
    ("gemini-4-hydrogen", {"max_tokens": 2000, "reasoning_effort": "xhigh"},
     {"thinkingLevel": "xhigh", "includeThoughts": True}, 34768, 2000),
    ("gemini-4-argon", {"max_tokens": 2000, "reasoning_effort": "xhigh"},
     {"thinkingLevel": "high", "includeThoughts": True}, 26576, 2000),
    ("gemini-4-neon", {"max_tokens": 30}, {"thinkingLevel": "low"}, 4126, 30),  # no minimal on Gemini 4
    # a big visible limit with no effort: the default thinking, bounded on 2.5
    ("gemini-2.5-flash", {"max_tokens": 4000}, {"thinkingBudget": 8192}, 12192, 4000),
    ("gemini-3.5-flash", {"max_tokens": 4000}, None, 16288, 4000),
    # no limit: nothing to protect
    ("gemini-2.5-flash", {}, None, None, None),
    ("gemini-2.5-pro", {"reasoning_effort": "none"}, {"thinkingBudget": 128}, None, None),
    ("gemini-2.5-pro", {"max_tokens": 65000, "reasoning_effort": "high"},
     {"thinkingBudget": 24576, "includeThoughts": True}, 65536, 65000),  # capped at the model's limit
])
def test_output_plan(model: str, kw: dict[str, Any], thinking: Any, max_out: Any, visible: Any) -> None:
    p = plan(model, **kw)
    assert (p.thinking, p.max_output_tokens, p.visible_limit) == (thinking, max_out, visible)
    body = gemini.build_request(chat.parse({"model": "x", "messages": user(), **kw}), model)
    accept(body, model)


def test_a_mapping_level_wins_and_is_fitted_to_the_model() -> None:
    req = chat.parse({"model": "gemini-3-pro-high", "messages": user(), "reasoning_effort": "low"})
    req.thinking_level = "high"
    assert gemini.output_plan(req, "gemini-3.1-pro-preview").thinking == {"thinkingLevel": "high",
                                                                          "includeThoughts": True}
    req.thinking_level = "minimal"
    assert gemini.output_plan(req, "gemini-3.1-pro-preview").thinking["thinkingLevel"] == "low"
    assert nearest_level(rules_for("gemini-3-pro-preview"), "medium") == "high"
    req.thinking_level = "high"  # a level on a budget model becomes a budget
    assert gemini.output_plan(req, "gemini-2.5-pro").thinking == {"thinkingBudget": 24576, "includeThoughts": True}


def test_legacy_completions_default_gets_visible_text() -> None:
    req, _ = completions.parse({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello to everyone here"})
    for model in ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-3.5-flash", "gemini-3.1-pro-preview"):
        body, reply = gemini.prepare(req, model)
        g = accept(body, model)
        [event] = emu.gemini_events(emu.gemini_answer(g, model, None), model, 3, emu.EmulatorState(), stream=False)
        done = gemini.completion_from(event, 1, reply)
        assert done.choices[0].text.startswith("Echo("), (model, event)


def test_visible_text_is_cut_at_the_clients_limit() -> None:
    reply = gemini.Reply(visible_limit=4)
    text = "one two three four five six seven eight"
    answer = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
              "usageMetadata": {"candidatesTokenCount": 8}}
    ch = gemini.completion_from(answer, 1, reply).choices[0]
    assert ch.text == "one two three four" and ch.finish_reason == "length"
    within = {**answer, "usageMetadata": {"candidatesTokenCount": 4}}
    assert gemini.completion_from(within, 1, reply).choices[0].finish_reason == "stop"
    # streamed: cut in the event that crosses the limit, finish "length" once, nothing after it
    decoder = gemini.GeminiStreamDecoder(1, reply)
    events = []
    for text, total in (("one two ", 2), ("three four five ", 5), ("six", 6)):
        events += decoder.feed(json.dumps({"candidates": [{"content": {"parts": [{"text": text}]}}],
                                           "usageMetadata": {"candidatesTokenCount": total}}))
    events += decoder.feed(json.dumps({"candidates": [{"content": {"parts": []}, "finishReason": "STOP"}]}))
    events += decoder.finish()
    texts = "".join(e.text for e in events if isinstance(e, c.TextDelta))
    assert texts == "one two three four" and [e.reason for e in events if isinstance(e, c.Finish)] == ["length"]


# ---- penalties, n, tools with JSON mode ---------------------------------------------------------

def test_penalties_are_dropped_where_refused() -> None:
    body = gemini.build_request(chat.parse({"model": "x", "messages": user(), "presence_penalty": 0.4,
                                            "frequency_penalty": 0.2}), "gemini-3.5-flash")
    assert "presencePenalty" not in json.dumps(body) and "frequencyPenalty" not in json.dumps(body)
    accept(body, "gemini-3.5-flash")


def test_json_mode_with_tools_on_25_moves_to_the_system_prompt() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    base = {"model": "x", "messages": user(), "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}}
    body = gemini.build_request(chat.parse(base), "gemini-2.5-flash")
    accept(body, "gemini-2.5-flash")
    assert "responseMimeType" not in json.dumps(body)
    instruction = body["systemInstruction"]["parts"][0]["text"]
    assert "JSON" in instruction and '"a"' in instruction
    on3 = gemini.build_request(chat.parse(base), "gemini-3.5-flash")
    assert on3["generationConfig"]["responseMimeType"] == "application/json" and "systemInstruction" not in on3
    accept(on3, "gemini-3.5-flash")
    none = gemini.build_request(chat.parse({**base, "tool_choice": "none"}), "gemini-2.5-flash")
    assert none["generationConfig"]["responseMimeType"] == "application/json"
    accept(none, "gemini-2.5-flash")


def test_singles_vary_the_seed_and_merge_adds_up() -> None:
    req = chat.parse({"model": "x", "messages": user(), "n": 3, "seed": 7})
    assert [(r.n, r.seed) for r in singles(req)] == [(1, 7), (1, 8), (1, 9)]
    parts = [c.Completion([c.Choice(text=f"t{i}")], c.Usage(2, 3, 1, 0)) for i in range(3)]
    merged = merge_completions(parts)
    assert [(ch.index, ch.text) for ch in merged.choices] == [(0, "t0"), (1, "t1"), (2, "t2")]
    assert (merged.usage.input_tokens, merged.usage.output_tokens, merged.usage.reasoning_tokens) == (6, 9, 3)


async def _batches(*batches: list[c.StreamEvent], fail: Exception | None = None,
                   delay: float = 0) -> AsyncIterator[list[c.StreamEvent]]:
    for b in batches:
        await asyncio.sleep(delay)
        yield b
    if fail:
        raise fail


async def test_merged_streams_renumber_choices_and_sum_usage() -> None:
    a = _batches([c.TextDelta(0, "a")], [c.Finish(0, "stop"), c.UsageUpdate(c.Usage(1, 2))], delay=0.01)
    b = _batches([c.TextDelta(0, "b")], [c.Finish(0, "stop"), c.UsageUpdate(c.Usage(1, 3))])
    out = [ev async for batch in merge_streams([a, b]) for ev in batch]
    assert sorted((e.choice, e.text) for e in out if isinstance(e, c.TextDelta)) == [(0, "a"), (1, "b")]
    assert [e for e in out if isinstance(e, c.UsageUpdate)] == [c.UsageUpdate(c.Usage(2, 5))]
    assert isinstance(out[-1], c.UsageUpdate)
    failing = merge_streams([_batches([c.TextDelta(0, "x")]), _batches(fail=UpstreamError(502, "cut"))])
    with pytest.raises(UpstreamError):
        async for _ in failing:
            pass


async def test_all_or_none_cancels_and_discards_on_a_failure() -> None:
    discarded: list[str] = []

    async def ok(x: str) -> str:
        return x

    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    async def bad() -> str:
        await asyncio.sleep(0.01)
        raise UpstreamError(429, "quota")

    async def discard(x: str) -> None:
        discarded.append(x)

    assert await all_or_none([ok("a"), ok("b")]) == ["a", "b"]
    with pytest.raises(UpstreamError):
        await all_or_none([ok("a"), slow(), bad()], discard=discard)
    assert discarded == ["a"]


# ---- the startup check of mapping targets ----------------------------------------------------------

async def test_the_model_list_is_paged_filtered_and_compared_with_the_targets(caplog) -> None:
    from addon.pool.accounts_file import GeminiAccount
    from addon.config.mapping import parse_mappings
    from addon.pool.model_check import unserved_targets
    from addon.upstream.gemini import GeminiProvider
    from addon.upstream.http import HttpClient

    state = emu.EmulatorState()
    runner, url = await emu.start(state=state)
    http = HttpClient()
    try:
        provider = GeminiProvider(http)
        acc = GeminiAccount(provider="gemini", email="a@x", api_key="k", base_url=url)
        names = await provider.list_models(acc, page_size=4)
        assert {"gemini-3.8-flash", "gemini-3.1-pro-preview", "gemini-2.5-flash-lite"} <= names
        assert "gemini-3.8-live" not in names  # neither generateContent nor embedContent
        assert {"gemini-embedding-001", "gemini-embedding-2"} <= names  # embedding targets are served too
        assert "gemini-3-pro-preview" not in names  # shut down
        assert "gemini-2.5-pro" not in names and "gemini-3.7-flash" not in names  # re-routed: not listed
        assert {"gemini-4-argon", "gemini-3.6-flash", "gemini-3.5-flash-lite"} <= names
        pages = [e for e in state.log if e["path"] == "/v1beta/models"]
        assert len(pages) == 5 and pages[1]["query"] == {"pageSize": "4", "pageToken": "4"}
        mappings = parse_mappings({"default": "gemini-2.5-flash", "mappings": {
            "a": "gemini-3.8-flash", "b": {"model": "gemini-3-pro-high", "thinking_level": "high"},
            "c": "llama-3", "gemini-*": None}})
        only_gemini = GeminiAccount(provider="gemini", email="g@x", api_key="k", base_url=url, models=["gemini-*"])
        bad_key = GeminiAccount(provider="gemini", email="bad@x", api_key="bad-key", base_url=url)
        found = await unserved_targets(mappings, [only_gemini, bad_key], {"gemini": provider})
        # llama-3 is not this account's to serve; gemini-2.5-flash is no longer listed (re-routed)
        assert found == {"g@x": ["gemini-3-pro-high", "gemini-2.5-flash"]}
        assert "g@x" in caplog.text and "gemini-3-pro-high" in caplog.text
        assert "gemini-2.5-flash (deprecated: Google answers it from gemini-3.5-flash-lite since 2026-12-01)" \
            in caplog.text
        assert "could not list the models of bad@x" in caplog.text  # reported, never raised
    finally:
        await http.aclose()
        await runner.cleanup()
