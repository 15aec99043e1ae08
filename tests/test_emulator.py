"""Direct tests of tests/emulator (the upstream emulator used by e2e tests and benchmarks)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.emulator import start

KEY = {"x-goog-api-key": "test-key"}
GEN = "/v1beta/models/gemini-2.5-flash:generateContent"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": text}]}


def sse_events(raw: str, sep: str) -> list[Any]:
    return [json.loads(e[len("data: "):]) for e in raw.split(sep) if e.startswith("data: ") and e != "data: [DONE]"]


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    runner, url = await start()
    async with httpx.AsyncClient(base_url=url, timeout=5) as c:
        yield c
    await runner.cleanup()


async def add_rules(client: httpx.AsyncClient, *rules: dict[str, Any]) -> None:
    r = await client.post("/__control/rules", json={"rules": list(rules)})
    assert r.status_code == 200, r.text


@pytest.mark.asyncio
async def test_gemini_generate_echo(client: httpx.AsyncClient) -> None:
    r = await client.post(GEN, headers=KEY, json={"contents": [user("hello world")]})
    assert r.status_code == 200, r.text
    body = r.json()
    cand = body["candidates"][0]
    assert cand["content"] == {"parts": [{"text": "Echo(gemini-2.5-flash): hello world"}], "role": "model"}
    assert cand["finishReason"] == "STOP"
    # 2.5 Flash thinks by default, and says so in usage (the emulated thinking costs 64 tokens)
    assert body["usageMetadata"] == {"promptTokenCount": 2, "candidatesTokenCount": 3, "thoughtsTokenCount": 64,
                                     "totalTokenCount": 69}
    # gemini-2.5-flash is re-routed since 2026-12-01: the answer comes from its successor
    assert body["modelVersion"] == "gemini-3.5-flash-lite"
    # missing and bad keys
    assert (await client.post(GEN, json={"contents": [user("x")]})).status_code == 403
    bad = await client.post(GEN, headers={"x-goog-api-key": "bad-key"}, json={"contents": [user("x")]})
    assert bad.status_code == 401 and bad.json()["error"]["status"] == "UNAUTHENTICATED"
    log = (await client.get("/__control/log")).json()["requests"]
    assert log[0]["key"] == "test-key" and log[0]["body"]["contents"][0]["parts"][0]["text"] == "hello world"


@pytest.mark.asyncio
async def test_gemini_stream_framing_and_usage(client: httpx.AsyncClient) -> None:
    r = await client.post(STREAM, headers=KEY, json={"contents": [user("one two three four five six")]})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("\r\n\r\n") and "[DONE]" not in r.text
    events = sse_events(r.text, "\r\n\r\n")
    assert len(events) >= 3
    finishes = [e["candidates"][0].get("finishReason") for e in events]
    assert finishes[:-1] == [None] * (len(events) - 1) and finishes[-1] == "STOP"
    text = "".join(p["text"] for e in events for p in e["candidates"][0]["content"]["parts"])
    assert text == "Echo(gemini-2.5-flash): one two three four five six"
    totals = [e["usageMetadata"]["totalTokenCount"] for e in events]
    assert totals == sorted(totals) and events[-1]["usageMetadata"]["candidatesTokenCount"] == 7


@pytest.mark.asyncio
async def test_gemini_tool_directive_and_pairing(client: httpx.AsyncClient) -> None:
    tools = [{"functionDeclarations": [{"name": "get_weather", "parameters": {
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]
    r = await client.post(GEN, headers=KEY, json={
        "contents": [user('weather? [[tool:get_weather {"city": "Paris"}]]')], "tools": tools})
    call = r.json()["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call == {"name": "get_weather", "args": {"city": "Paris"}}
    model_turn = {"role": "model", "parts": [{"functionCall": call}]}
    # A text-only user turn after a function-call turn violates pairing.
    r = await client.post(GEN, headers=KEY, json={
        "contents": [user("q"), model_turn, user("no response")], "tools": tools})
    assert r.status_code == 400
    assert "number of function response parts is equal" in r.json()["error"]["message"]
    r = await client.post(GEN, headers=KEY, json={"tools": tools, "contents": [
        user("q"), model_turn,
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"t": 20}}}]}]})
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == 'Tool get_weather returned: {"t":20}'


@pytest.mark.asyncio
async def test_gemini3_thought_signature(client: httpx.AsyncClient) -> None:
    url = "/v1beta/models/gemini-3.1-pro-preview:generateContent"
    tools = [{"functionDeclarations": [{"name": "f"}]}]
    r = await client.post(url, headers=KEY, json={"contents": [user("[[tool:f {}]]")], "tools": tools})
    part = r.json()["candidates"][0]["content"]["parts"][0]
    assert part["thoughtSignature"]
    response = {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}
    ok = await client.post(url, headers=KEY, json={
        "tools": tools, "contents": [user("[[tool:f {}]]"), {"role": "model", "parts": [part]}, response]})
    assert ok.status_code == 200, ok.text
    unsigned = {"role": "model", "parts": [{"functionCall": part["functionCall"]}]}
    r = await client.post(url, headers=KEY, json={
        "tools": tools, "contents": [user("[[tool:f {}]]"), unsigned, response]})
    assert r.status_code == 400 and "thought_signature" in r.json()["error"]["message"]


@pytest.mark.asyncio
async def test_schema_rejects_additional_properties(client: httpx.AsyncClient) -> None:
    params = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False}
    r = await client.post(GEN, headers=KEY, json={
        "contents": [user("x")], "tools": [{"functionDeclarations": [{"name": "f", "parameters": params}]}]})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT"
    assert err["message"] == ('Invalid JSON payload received. Unknown name "additionalProperties" at '
                              "'tools[0].function_declarations[0].parameters': Cannot find field.")
    # parametersJsonSchema accepts full JSON Schema
    r = await client.post(GEN, headers=KEY, json={
        "contents": [user("x")], "tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": params}]}]})
    assert r.status_code == 200
    r = await client.post(GEN, headers=KEY, json={"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]})
    assert r.status_code == 400


@pytest.mark.asyncio
async def test_429_rule_with_retry_info_is_consumed(client: httpx.AsyncClient) -> None:
    await add_rules(client, {"match": {"path_contains": "generateContent"}, "times": 2, "status": 429,
                             "retry_delay": "1.5s", "retry_after": "2"})
    for _ in range(2):
        r = await client.post(GEN, headers=KEY, json={"contents": [user("x")]})
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        err = r.json()["error"]
        assert err["status"] == "RESOURCE_EXHAUSTED"
        assert err["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]
    assert (await client.post(GEN, headers=KEY, json={"contents": [user("x")]})).status_code == 200


@pytest.mark.asyncio
async def test_cloud_code_oauth_and_envelope(client: httpx.AsyncClient) -> None:
    form = {"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": "c", "client_secret": "s"}
    tok = (await client.post("/token", data=form)).json()
    assert tok["token_type"] == "Bearer" and tok["access_token"].startswith("ya29.") and tok["expires_in"] == 3600
    revoked = await client.post("/token", data={**form, "refresh_token": "revoked-1"})
    assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"
    assert (await client.get("/__control/stats")).json()["refreshes"] == {"rt-1": 1, "revoked-1": 1}

    body = {"model": "gemini-2.5-pro", "project": "p1", "request": {"contents": [user("hi there")]}}
    auth = {"Authorization": f"Bearer {tok['access_token']}"}
    r = await client.post("/v1internal:generateContent", headers={"Authorization": "Bearer nope"}, json=body)
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
    r = await client.post("/v1internal:generateContent", headers=auth, json=body)
    assert r.json()["response"]["candidates"][0]["content"]["parts"][0]["text"] == "Echo(gemini-2.5-pro): hi there"
    assert "traceId" in r.json()
    r = await client.post("/v1internal:streamGenerateContent?alt=sse", headers=auth, json=body)
    events = sse_events(r.text, "\r\n\r\n")
    assert all("response" in e for e in events) and events[-1]["response"]["candidates"][0]["finishReason"] == "STOP"
    r = await client.post("/v1internal:generateContent", headers=auth, json={**body, "project": None})
    assert r.status_code == 400 and isinstance(r.json(), list)


@pytest.mark.asyncio
async def test_openai_stream_and_tool_calls(client: httpx.AsyncClient) -> None:
    auth = {"Authorization": "Bearer sk-test"}
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hello there"}]}
    r = await client.post("/openai/v1/chat/completions", headers=auth, json=body)
    assert r.text.endswith("data: [DONE]\n\n")
    chunks = sse_events(r.text, "\n\n")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == \
        "Echo(gpt-4o): hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 5

    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    r = await client.post("/openai/v1/chat/completions", headers=auth, json={
        **body, "tools": tools, "messages": [{"role": "user", "content": '[[tool:f {"a": 1}]]'}]})
    chunks = sse_events(r.text, "\n\n")
    arg_deltas = [tc["function"]["arguments"] for c in chunks if c["choices"]
                  for tc in c["choices"][0]["delta"].get("tool_calls", []) if tc["function"].get("arguments")]
    assert len(arg_deltas) >= 2 and "".join(arg_deltas) == '{"a":1}'
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] == "tool_calls"
    bad = await client.post("/openai/v1/chat/completions", headers={"Authorization": "Bearer bad"}, json=body)
    assert bad.status_code == 401 and "message" in bad.json()["error"]


@pytest.mark.asyncio
async def test_chunk_delay_and_reply_chunks(client: httpx.AsyncClient) -> None:
    await add_rules(client, {"reply": {"chunks": ["a", "b", "c", "d"]}, "chunk_delay_ms": 50})
    t0 = time.monotonic()
    r = await client.post(STREAM, headers=KEY, json={"contents": [user("x")]})
    assert time.monotonic() - t0 >= 0.15  # three gaps between four chunks
    events = sse_events(r.text, "\r\n\r\n")
    assert [e["candidates"][0]["content"]["parts"][0]["text"] for e in events] == ["a", "b", "c", "d"]


@pytest.mark.asyncio
async def test_cut_after_and_drop(client: httpx.AsyncClient) -> None:
    await add_rules(client, {"times": 1, "cut_after": 2, "reply": {"chunks": ["a", "b", "c"]}},
                    {"times": 1, "drop": True})
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        async with client.stream("POST", STREAM, headers=KEY, json={"contents": [user("x")]}) as r:
            async for line in r.aiter_lines():
                received.append(line)
    events = [json.loads(line[6:]) for line in received if line.startswith("data: ")]
    assert len(events) == 2 and all("finishReason" not in e["candidates"][0] for e in events)
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(GEN, headers=KEY, json={"contents": [user("x")]})
    assert (await client.post(GEN, headers=KEY, json={"contents": [user("x")]})).status_code == 200


@pytest.mark.asyncio
async def test_gemini_models_follow_googles_lifecycle(client: httpx.AsyncClient) -> None:
    """Current models are listed; a re-routed name answers from its successor (modelVersion says
    which, streamed too) and is not listed; a shut-down name is Google's 404."""
    listed = {m["baseModelId"] for m in (await client.get("/v1beta/models?pageSize=1000", headers=KEY)).json()["models"]}
    assert {"gemini-3.8-flash", "gemini-3.6-flash", "gemini-3.5-flash-lite", "gemini-4-argon"} <= listed
    assert not listed & {"gemini-2.5-pro", "gemini-2.5-flash", "gemini-3.5-flash", "gemini-3.7-flash",
                         "gemini-3-pro-preview"}
    for name, successor in (("gemini-2.5-pro", "gemini-3.8-flash"), ("gemini-3.7-flash", "gemini-3.8-flash"),
                            ("gemini-3.5-flash", "gemini-3.6-flash")):
        r = await client.post(f"/v1beta/models/{name}:generateContent", headers=KEY, json={"contents": [user("x")]})
        assert r.status_code == 200 and r.json()["modelVersion"] == successor, (name, r.text)
        assert (await client.get(f"/v1beta/models/{name}", headers=KEY)).status_code == 200  # still known
    streamed = await client.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", headers=KEY,
                                 json={"contents": [user("a b c")]})
    assert {e["modelVersion"] for e in sse_events(streamed.text, "\r\n\r\n")} == {"gemini-3.5-flash-lite"}
    current = await client.post("/v1beta/models/gemini-4-argon:generateContent", headers=KEY,
                                json={"contents": [user("x")],
                                      "generationConfig": {"thinkingConfig": {"thinkingLevel": "MEDIUM"}}})
    assert current.status_code == 200 and current.json()["modelVersion"] == "gemini-4-argon"
    for gone in ("gemini-3-pro-preview", "gemini-2.0-flash"):
        r = await client.post(f"/v1beta/models/{gone}:generateContent", headers=KEY, json={"contents": [user("x")]})
        assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"
        assert r.json()["error"]["message"].startswith(f"models/{gone} is not found for API version v1beta")


@pytest.mark.asyncio
async def test_thinking_levels_of_gemini_4(client: httpx.AsyncClient) -> None:
    """xhigh where Google documents it (Hydrogen, Neon), refused elsewhere; no MINIMAL on Gemini 4."""
    def body(level: str) -> dict[str, Any]:
        return {"contents": [user("x")], "generationConfig": {"thinkingConfig": {"thinkingLevel": level}}}

    ok = await client.post("/v1beta/models/gemini-4-hydrogen:generateContent", headers=KEY, json=body("XHIGH"))
    assert ok.status_code == 200, ok.text
    for model, level in (("gemini-4-argon", "XHIGH"), ("gemini-3.8-flash", "XHIGH"), ("gemini-4-neon", "MINIMAL")):
        r = await client.post(f"/v1beta/models/{model}:generateContent", headers=KEY, json=body(level))
        assert r.status_code == 400 and f"Thinking level {level} is not supported" in r.json()["error"]["message"]
