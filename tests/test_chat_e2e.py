"""Chat Completions end to end: the official `openai` SDK -> a real mitmdump with the addon -> the emulator.

Covers the seed lesson's checkpoints (health, models, JSON and SSE completions, mapping headers),
streaming behaviour a client can feel (incremental arrival, framing, mid-stream failures, keep-alives),
errors, auth modes, secret hygiene, what a flow looks like in mitmweb, and mapping hot reload.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Emulator, Gateway, GatewayFactory, gemini_accounts

pytestmark = pytest.mark.e2e

ECHO = "Echo(gemini-3.8-flash): "
LITE = "gemini-2.5-flash-lite"
LITE_ECHO = f"Echo({LITE}): "
GW_KEY = "gw-secret-4f7a1c9e2b"
UPSTREAM_KEY = "AIzaUpstreamSecret8c1e4b7f2a"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def post_chat(gw: Gateway, body: Any, headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, (bytes, str)) else {"json": body}
    return httpx.post(gw.v1 + "/chat/completions", headers={"content-type": "application/json", **(headers or {})},
                      timeout=20, **kwargs, **kw)


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code, err
    if param is not None:
        assert err["param"] == param, err
    return err


def sse_blocks(raw: str) -> list[str]:
    assert raw.endswith("\n\n"), raw[-200:]
    return raw[:-2].split("\n\n")


def data_events(raw: str) -> list[Any]:
    out = []
    for block in sse_blocks(raw):
        lines = [ln for ln in block.split("\n") if not ln.startswith(":")]
        if not lines:
            continue
        assert len(lines) == 1 and lines[0].startswith("data: "), block
        payload = lines[0][len("data: "):]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city", "strict": True,
    "parameters": {"type": "object", "additionalProperties": False,
                   "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"]}},
                   "required": ["city", "unit"]}}}]


# ---- the seed lesson's checkpoints ----------------------------------------------------------------

def test_healthz(gateway: Gateway) -> None:
    for path in ("/healthz", "/health"):
        r = httpx.get(gateway.url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.json()["status"] == "ok"


def test_models_list(gateway: Gateway) -> None:
    r = httpx.get(gateway.v1 + "/models")
    assert r.status_code == 200 and r.json()["object"] == "list"
    models = gateway.openai().models.list()
    ids = [m.id for m in models.data]
    assert ids and all("*" not in i for i in ids) and len(ids) == len(set(ids))
    assert {"gpt-4o-mini", "gemini-3.8-flash", "gemini-4-argon"} <= set(ids)
    assert all(m.object == "model" and m.owned_by and isinstance(m.created, int) for m in models.data)


def test_model_retrieve_and_unknown(gateway: Gateway) -> None:
    client = gateway.openai()
    raw = client.models.with_raw_response.retrieve("gpt-4o")
    assert raw.headers["x-mapped-model"] == "gemini-3.8-flash"
    assert raw.parse().id == "gpt-4o"
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    # The shipped mappings.yaml has a default, so the chat route serves any name: the models route
    # agrees that it exists, and says what it maps to.
    raw = client.models.with_raw_response.retrieve("llama-3-70b-nonexistent")
    assert raw.headers["x-mapped-model"] == "gemini-3.8-flash" and raw.parse().id == "llama-3-70b-nonexistent"


def test_models_list_the_names_clients_type_and_each_one_is_served(gateway: Gateway, emulator: Emulator) -> None:
    client = gateway.openai()
    ids = [m.id for m in client.models.list().data]
    assert {"gpt-4o", "gpt-4.1", "gpt-5", "gpt-5-codex", "o3", "o4-mini"} <= set(ids)
    for name in ids:  # the models route and the chat route agree on every listed name
        raw = client.models.with_raw_response.retrieve(name)
        if "embedding" in raw.headers["x-mapped-model"]:
            continue  # an embedding model: served by /v1/embeddings, not by chat
        chat = client.chat.completions.with_raw_response.create(model=name, messages=user("x"))
        assert chat.headers["x-mapped-model"] == raw.headers["x-mapped-model"], name


def test_without_a_default_an_unmapped_name_is_refused_by_both_routes(gateways: GatewayFactory,
                                                                      emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "alice"),
                        mappings_yaml="mappings:\n  my-model: gemini-2.5-pro\n  \"gemini-*\": ~\n")
    client = gw.openai()
    for call in (lambda: client.models.retrieve("gpt-4o"),
                 lambda: client.chat.completions.create(model="gpt-4o", messages=user("x"))):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.code == "model_not_found" and "gpt-4o" in info.value.message
    assert not emulator.log()  # refused before any upstream call
    assert client.models.retrieve("gemini-2.5-flash").id == "gemini-2.5-flash"  # a wildcard covers it
    assert client.chat.completions.create(model="my-model", messages=user("x")).choices


def test_non_stream_completion(gateway: Gateway, emulator: Emulator) -> None:
    resp = gateway.openai().chat.completions.create(model="gpt-4o", messages=user("hello gateway"))
    assert resp.choices[0].message.content == ECHO + "hello gateway"
    assert resp.choices[0].finish_reason == "stop" and resp.choices[0].message.role == "assistant"
    assert resp.model == "gpt-4o" and resp.id.startswith("chatcmpl-") and resp.object == "chat.completion"
    assert resp.usage is not None and resp.usage.prompt_tokens == 2 and resp.usage.total_tokens > 2
    [call] = emulator.log()
    assert call["path"] == "/v1beta/models/gemini-3.8-flash:generateContent" and call["key"] == "alice"


def test_stream_completion_sdk(gateway: Gateway) -> None:
    stream = gateway.openai().chat.completions.create(model="gpt-4o", messages=user("one two three four five"),
                                                      stream=True)
    chunks = list(stream)
    assert len(chunks) >= 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ECHO + "one two three four five"
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:])
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_raw_sse_framing(gateway: Gateway) -> None:
    r = post_chat(gateway, {"model": "gpt-4o", "stream": True, "messages": user("frame me please")})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    blocks = sse_blocks(r.text)
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), blocks
    assert blocks[-1] == "data: [DONE]" and r.text.endswith("data: [DONE]\n\n")
    assert "\r" not in r.text
    chunks = [json.loads(b[6:]) for b in blocks[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == ECHO + "frame me please"


def test_mapping_and_account_headers(gateway: Gateway) -> None:
    client = gateway.openai()
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=user("hi"))
    assert raw.headers["x-mapped-model"] == "gemini-3.5-flash-lite"
    assert raw.headers["x-account-email"] == "alice@example.com"
    assert raw.parse().choices[0].message.content == "Echo(gemini-3.5-flash-lite): hi"

    raw = client.chat.completions.with_raw_response.create(model="o3-mini", messages=user("hi"), stream=True)
    assert raw.headers["x-mapped-model"] == "gemini-3.8-flash"
    assert raw.headers["x-account-email"] == "alice@example.com"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == ECHO + "hi"

    with httpx.stream("POST", gateway.v1 + "/chat/completions", timeout=20,
                      json={"model": "gemini-2.5-pro", "stream": True, "messages": user("x")}) as r:
        assert r.headers["x-mapped-model"] == "gemini-2.5-pro"
        assert r.headers["x-account-email"] == "alice@example.com"
        assert "data: [DONE]" in r.read().decode()


async def test_async_client(gateway: Gateway) -> None:
    client = gateway.async_openai()
    resp = await client.chat.completions.create(model="gpt-4o", messages=user("async hello"))
    assert resp.choices[0].message.content == ECHO + "async hello"
    stream = await client.chat.completions.create(model="gpt-4o", messages=user("async stream"), stream=True,
                                                  stream_options={"include_usage": True})
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        else:
            usage = chunk.usage
    assert text == ECHO + "async stream" and usage is not None and usage.total_tokens > 0
    # concurrent requests are served concurrently and independently
    results = await asyncio.gather(*[client.chat.completions.create(model="gpt-4o", messages=user(f"n{i}"))
                                     for i in range(5)])
    assert [r.choices[0].message.content for r in results] == [ECHO + f"n{i}" for i in range(5)]
    await client.close()


# ---- tools -----------------------------------------------------------------------------------

def test_stream_tool_call_with_sdk_iteration(gateway: Gateway, emulator: Emulator) -> None:
    stream = gateway.openai().chat.completions.create(
        model="gpt-4o", tools=TOOLS, stream=True,
        messages=user('weather? [[tool:get_weather {"city": "Paris", "unit": null}]]'))
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        ch = chunk.choices[0]
        for tc in ch.delta.tool_calls or []:
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            if tc.id:
                assert not slot["id"], "a tool call's id appears once"
                slot["id"] = tc.id
            if tc.function and tc.function.name:
                slot["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                slot["arguments"] += tc.function.arguments
        finish = ch.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["id"].startswith("call_") and calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris", "unit": None}
    # the strict schema reached Gemini as JSON Schema (parametersJsonSchema keeps additionalProperties and
    # the type list, which the OpenAPI-subset `parameters` would refuse); OpenAI's `strict` flag stays here
    sent = emulator.log()[-1]["body"]["tools"][0]["functionDeclarations"][0]
    assert "parameters" not in sent and "strict" not in json.dumps(sent)
    assert sent["parametersJsonSchema"]["additionalProperties"] is False
    assert sent["parametersJsonSchema"]["properties"]["unit"]["type"] == ["string", "null"]


def test_stream_helper_final_completion_and_tool_round_trip(gateway: Gateway) -> None:
    client = gateway.openai()
    messages: list[Any] = user('[[tool:get_weather {"city": "Oslo", "unit": "c"}]]')
    with client.chat.completions.stream(model="gpt-4o", messages=messages, tools=TOOLS) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo", "unit": "c"}
    assert call.function.parsed_arguments == {"city": "Oslo", "unit": "c"}  # strict tool: parsed by the SDK
    # send the result back: the gateway pairs it with the call by id
    messages += [{"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 3}'}]
    with client.chat.completions.stream(model="gpt-4o", messages=messages, tools=TOOLS) as stream:
        text = stream.get_final_completion().choices[0].message.content
    assert text == 'Tool get_weather returned: {"temp":3}'


def test_non_stream_tool_call(gateway: Gateway) -> None:
    resp = gateway.openai().chat.completions.create(
        model="gpt-4o", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=user('[[tool:get_weather {"city": "Rome", "unit": null}]]'))
    ch = resp.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    assert ch.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(ch.message.tool_calls[0].function.arguments) == {"city": "Rome", "unit": None}


# ---- usage and n --------------------------------------------------------------------------------

def test_include_usage(gateway: Gateway) -> None:
    chunks = list(gateway.openai().chat.completions.create(
        model="gpt-4o", messages=user("count my tokens"), stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 3 and chunks[-1].usage.total_tokens == \
        chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks[:-1])
    r = post_chat(gateway, {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                            "messages": user("x")})
    events = data_events(r.text)
    assert events[-1] == "[DONE]" and all(e["usage"] is None for e in events[:-2])
    assert events[-2]["choices"] == [] and events[-2]["usage"]["total_tokens"] > 0


def test_n_two(gateway: Gateway, emulator: Emulator) -> None:
    # 2.5 Flash-Lite (current) serves several candidates in one call; Gemini 3 refuses them
    client = gateway.openai()
    resp = client.chat.completions.create(model=LITE, messages=user("twice"), n=2)
    assert [(c.index, c.message.content) for c in resp.choices] == [
        (0, LITE_ECHO + "twice"), (1, LITE_ECHO + "twice (candidate 1)")]
    assert emulator.log()[-1]["body"]["generationConfig"]["candidateCount"] == 2
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in client.chat.completions.create(model=LITE, messages=user("twice"), n=2, stream=True):
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
    assert texts == {0: LITE_ECHO + "twice", 1: LITE_ECHO + "twice (candidate 1)"}
    assert finishes == {0: "stop", 1: "stop"}


# ---- streaming behaviour a client can feel -------------------------------------------------------

def test_chunks_arrive_as_they_are_produced(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"reply": {"chunks": ["a", "b", "c", "d", "e"]}, "chunk_delay_ms": 200, "times": 1})
    arrivals: list[tuple[float, str]] = []
    t0 = time.monotonic()
    with httpx.stream("POST", gateway.v1 + "/chat/completions", timeout=20,
                      json={"model": "gpt-4o", "stream": True, "messages": user("slow")}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                content = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if content:
                    arrivals.append((time.monotonic() - t0, content))
        t_end = time.monotonic() - t0
    assert [c for _, c in arrivals] == ["a", "b", "c", "d", "e"]
    times = [t for t, _ in arrivals]
    assert t_end - times[0] >= 0.6, f"first content at {times[0]:.3f}s, stream ended at {t_end:.3f}s"
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.05 <= g <= 0.6 for g in gaps), gaps  # each chunk on its own (generous under load)
    assert 0.15 <= statistics.median(gaps) <= 0.35, gaps


def test_mid_stream_cut_raises_api_error(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"reply": {"chunks": ["one ", "two ", "three ", "four "]}, "cut_after": 2, "times": 1})
    stream = gateway.openai().chat.completions.create(model="gpt-4o", messages=user("x"), stream=True)
    received = ""
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received += chunk.choices[0].delta.content or ""
    # an `error` event from the gateway, not a dropped connection or a silent EOF
    assert type(info.value) is openai.APIError
    assert info.value.body["code"] == "upstream_stream_error"
    assert received == "one two "

    emulator.rules({"reply": {"chunks": ["one ", "two ", "three ", "four "]}, "cut_after": 2, "times": 1})
    r = post_chat(gateway, {"model": "gpt-4o", "stream": True, "messages": user("x")})
    events = data_events(r.text)
    assert "[DONE]" not in events and set(events[-1]) == {"error"}
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


def test_gateway_still_healthy_after_a_cut(gateway: Gateway, emulator: Emulator) -> None:
    resp = gateway.openai().chat.completions.create(model="gpt-4o", messages=user("still ok"))
    assert resp.choices[0].message.content == ECHO + "still ok"


def test_client_that_gives_up_cancels_a_slow_non_stream_call(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"delay_ms": 4000, "times": 1})  # the upstream takes 4 s to answer
    before = gateway.log().count("client went away before the answer")
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        gateway.openai(timeout=0.5).chat.completions.create(model="gpt-4o", messages=user("too slow"))
    deadline = time.monotonic() + 5
    while gateway.log().count("client went away before the answer") == before:
        assert time.monotonic() < deadline, "the abandoned upstream call was not cancelled"
        time.sleep(0.1)
    assert time.monotonic() - started < 3  # within about a second of the client leaving, not after 4 s


@pytest.fixture(scope="module")
def lenient_gateway(gateways: GatewayFactory, emulator_proc: Emulator) -> Gateway:
    """auth_mode=auto without LAN access and without a key (so off) and 1 s keep-alives.
    (With a key configured, auto checks it: tests/test_hardening_e2e.py.)"""
    return gateways.start(gemini_accounts(emulator_proc.url, "dave"), auth_mode="auto", keepalive_seconds=1)


def test_keepalive_comments_during_upstream_silence(lenient_gateway: Gateway, emulator: Emulator) -> None:
    from openai._streaming import SSEDecoder

    emulator.rules({"reply": {"chunks": ["before ", "after"]}, "chunk_delay_ms": 2500, "times": 1})
    r = post_chat(lenient_gateway, {"model": "gpt-4o", "stream": True, "messages": user("x")})
    raw = r.text
    first, second = raw.index('"before "'), raw.index('"after"')
    assert raw.count(": keep-alive\n\n", first, second) >= 1, raw
    assert raw.endswith("data: [DONE]\n\n")
    # the SDK's own SSE decoder treats them as comments: only the data events come out
    events = [e.data for e in SSEDecoder().iter_bytes(iter([r.content]))]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(d) for d in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "before after"


def test_auto_without_lan_or_key_means_no_auth(lenient_gateway: Gateway) -> None:
    assert httpx.get(lenient_gateway.v1 + "/models").status_code == 200
    assert httpx.get(lenient_gateway.url + "/healthz").status_code == 200
    r = post_chat(lenient_gateway, {"model": "gpt-4o", "messages": user("no key")}, headers={})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ECHO + "no key"


# ---- errors ------------------------------------------------------------------------------------

def test_invalid_json(gateway: Gateway) -> None:
    assert_openai_error(post_chat(gateway, b'{"model": "gpt-4o", "messages": ['), 400, code="invalid_json")
    assert_openai_error(post_chat(gateway, b"[1, 2]"), 400, code="invalid_json")


def test_missing_messages_names_the_param(gateway: Gateway) -> None:
    err = assert_openai_error(post_chat(gateway, {"model": "gpt-4o"}), 400, param="messages")
    assert "messages" in err["message"]
    assert_openai_error(post_chat(gateway, {"messages": user("x")}), 400, param="model")
    assert_openai_error(post_chat(gateway, {"model": "gpt-4o", "messages": user("x"), "temperature": 9}), 400,
                        param="temperature")
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().chat.completions.create(model="gpt-4o", messages=user("x"),
                                                 stream_options={"include_usage": True})
    assert info.value.param == "stream_options"


def test_unknown_route_and_wrong_base_url(gateway: Gateway) -> None:
    err = assert_openai_error(httpx.get(gateway.v1 + "/nope"), 404)
    assert "/v1" in err["message"]
    assert_openai_error(httpx.post(gateway.v1 + "/nope", json={}), 404)
    # a client whose base URL already ends in /chat/completions (a common misconfiguration)
    wrong = openai.OpenAI(base_url=gateway.v1 + "/chat/completions", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        wrong.responses.create(model="gpt-4o", input="hi")
    assert info.value.status_code == 404 and "/chat/completions/responses" in info.value.message
    with pytest.raises(openai.NotFoundError):
        wrong.chat.completions.create(model="gpt-4o", messages=user("x"))  # .../chat/completions/chat/completions


def test_upstream_400_is_a_bad_request_with_its_message(gateway: Gateway, emulator: Emulator) -> None:
    emulator.rules({"status": 400, "message": "Request contains an invalid argument: frobnicate.", "times": 2})
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().chat.completions.create(model="gpt-4o", messages=user("x"))
    assert "frobnicate" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        gateway.openai().chat.completions.create(model="gpt-4o", messages=user("x"), stream=True)
    assert "frobnicate" in info.value.message
    assert len(emulator.log()) == 2  # a 400 is not retried


def test_upstream_429_single_account(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "carol"))
    emulator.rules({"status": 429, "retry_delay": "1.5s", "times": 1})
    with pytest.raises(openai.RateLimitError) as info:
        gw.openai().chat.completions.create(model="gpt-4o", messages=user("x"))
    assert info.value.response.headers["retry-after"] == "2"
    assert info.value.code == "rate_limit_exceeded"
    assert len(emulator.log()) == 1  # one account: no second attempt
    # once the cooldown is over the account serves again (poll, no fixed sleep)
    deadline = time.monotonic() + 6
    while True:
        try:
            resp = gw.openai().chat.completions.create(model="gpt-4o", messages=user("back"))
            break
        except openai.RateLimitError as exc:
            assert time.monotonic() < deadline, "account never recovered"
            assert int(exc.response.headers["retry-after"]) >= 1
            time.sleep(0.2)
    assert resp.choices[0].message.content == ECHO + "back"
    gateways.stop(gw)


@pytest.fixture(scope="module")
def side_gateways(gateways: GatewayFactory, emulator_proc: Emulator) -> dict[str, Gateway]:
    """Single-purpose gateways, started in parallel (each mitmdump start costs 1-2 s)."""
    specs = {
        "no_account": dict(accounts_yaml=None),
        "env_only": dict(accounts_yaml=None, env={"GEMINI_API_KEY": "env-key-7781", "GEMINI_BASE_URL": emulator_proc.url}),
        "all_except_health": dict(accounts_yaml=gemini_accounts(emulator_proc.url, "frank"),
                                  auth_mode="all_except_health", api_key=GW_KEY),
        "auto_lan": dict(accounts_yaml=gemini_accounts(emulator_proc.url, "grace"), auth_mode="auto",
                         allow_lan_access=True, api_key=GW_KEY),
    }
    with ThreadPoolExecutor(len(specs)) as pool:
        started = {name: pool.submit(gateways.start, **kw) for name, kw in specs.items()}
        return {name: fut.result() for name, fut in started.items()}


def test_no_account_configured(side_gateways: dict[str, Gateway]) -> None:
    gw = side_gateways["no_account"]
    with pytest.raises(openai.InternalServerError) as info:
        gw.openai().chat.completions.create(model="gpt-4o", messages=user("x"))
    assert info.value.status_code == 503
    assert "GEMINI_API_KEY" in info.value.message and "accounts" in info.value.message
    assert httpx.get(gw.url + "/healthz").status_code == 200


def test_env_only_start(side_gateways: dict[str, Gateway], emulator: Emulator) -> None:
    gw = side_gateways["env_only"]
    raw = gw.openai().chat.completions.with_raw_response.create(model="gpt-4o", messages=user("from env"))
    assert raw.parse().choices[0].message.content == ECHO + "from env"
    assert raw.headers["x-mapped-model"] == "gemini-3.8-flash" and raw.headers["x-account-email"]
    assert emulator.log()[-1]["key"] == "env-key-7781"
    assert "env-key-7781" not in raw.headers["x-account-email"]
    assert "env-key-7781" not in gw.log()


# ---- auth ------------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def strict_gateway(gateways: GatewayFactory, emulator_proc: Emulator) -> Gateway:
    accounts = f"""
accounts:
  - provider: gemini
    email: erin@example.com
    api_key: {UPSTREAM_KEY}
    base_url: {emulator_proc.url}
"""
    return gateways.start(accounts, auth_mode="strict", api_key=GW_KEY)


SEEN: list[str] = []  # every response head and body the strict gateway sent, for the leak check


def _record(r: httpx.Response) -> httpx.Response:
    SEEN.append(json.dumps(dict(r.headers)) + "\n" + r.text)
    return r


def test_strict_accepts_the_key_in_all_three_headers(strict_gateway: Gateway) -> None:
    gw = strict_gateway
    resp = gw.openai().chat.completions.create(model="gpt-4o", messages=user("bearer"))  # SDK: Bearer
    assert resp.choices[0].message.content == ECHO + "bearer"
    for header in ({"authorization": f"Bearer {GW_KEY}"}, {"x-api-key": GW_KEY}, {"x-goog-api-key": GW_KEY}):
        r = _record(post_chat(gw, {"model": "gpt-4o", "messages": user("k")}, headers=header))
        assert r.status_code == 200, (header, r.text)
        assert _record(httpx.get(gw.v1 + "/models", headers=header)).status_code == 200


def test_strict_refuses_wrong_and_missing_keys(strict_gateway: Gateway, emulator: Emulator) -> None:
    gw = strict_gateway
    with pytest.raises(openai.AuthenticationError):
        gw.openai(api_key="wrong-key").chat.completions.create(model="gpt-4o", messages=user("x"))
    with pytest.raises(openai.AuthenticationError):
        gw.openai(api_key="wrong-key").models.list()
    for headers in ({}, {"authorization": "Bearer"}, {"authorization": f"Basic {GW_KEY}"},
                    {"x-api-key": GW_KEY[:-1]}, {"authorization": f"Bearer {GW_KEY}x"}):
        assert_openai_error(_record(post_chat(gw, {"model": "gpt-4o", "messages": user("x")}, headers=headers)), 401)
    # healthz is protected in strict mode
    assert_openai_error(_record(httpx.get(gw.url + "/healthz")), 401)
    assert _record(httpx.get(gw.url + "/healthz", headers={"x-api-key": GW_KEY})).json()["status"] == "ok"
    assert emulator.log() == []  # nothing unauthenticated reached the upstream


def test_secrets_never_leak(strict_gateway: Gateway, emulator: Emulator) -> None:
    gw = strict_gateway
    auth = {"authorization": f"Bearer {GW_KEY}"}
    # an upstream error that echoes the key, a streamed failure, and ordinary traffic
    emulator.rules({"status": 400, "message": f"API key {UPSTREAM_KEY} is not valid for this model.", "times": 1})
    r = _record(post_chat(gw, {"model": "gpt-4o", "messages": user("x")}, headers=auth))
    assert r.status_code == 400 and "[redacted]" in r.text
    emulator.rules({"reply": {"chunks": ["a", "b", "c"]}, "cut_after": 1, "times": 1})
    _record(post_chat(gw, {"model": "gpt-4o", "stream": True, "messages": user("x")}, headers=auth))
    _record(post_chat(gw, {"model": "gpt-4o", "stream": True, "messages": user("x")}, headers=auth))
    _record(httpx.get(gw.v1 + "/models/gpt-4o", headers=auth))
    _record(httpx.get(gw.v1 + "/nope", headers=auth))
    assert len(SEEN) >= 5
    for text in SEEN:
        assert GW_KEY not in text and UPSTREAM_KEY not in text, text[:500]
    log = gw.log()
    assert "erin@example.com" in log or "POST" in log  # the log is really being written
    assert GW_KEY not in log and UPSTREAM_KEY not in log


def test_all_except_health(side_gateways: dict[str, Gateway]) -> None:
    gw = side_gateways["all_except_health"]
    assert httpx.get(gw.url + "/healthz").json()["status"] == "ok"
    assert_openai_error(httpx.get(gw.v1 + "/models"), 401)
    assert_openai_error(post_chat(gw, {"model": "gpt-4o", "messages": user("x")}), 401)
    with pytest.raises(openai.AuthenticationError):
        gw.openai(api_key="nope-nope").chat.completions.create(model="gpt-4o", messages=user("x"))
    assert gw.openai().chat.completions.create(model="gpt-4o", messages=user("ok")).choices[0].message.content \
        == ECHO + "ok"


def test_auto_with_lan_access_requires_the_key(side_gateways: dict[str, Gateway]) -> None:
    gw = side_gateways["auto_lan"]
    assert httpx.get(gw.url + "/healthz").status_code == 200
    assert_openai_error(httpx.get(gw.v1 + "/models"), 401)
    assert_openai_error(post_chat(gw, {"model": "gpt-4o", "messages": user("x")}), 401)
    with pytest.raises(openai.AuthenticationError):
        gw.openai(api_key="nope-nope").models.list()
    assert gw.openai().models.list().data
    assert httpx.get(gw.v1 + "/models", headers={"x-goog-api-key": GW_KEY}).status_code == 200


# ---- what mitmweb shows --------------------------------------------------------------------------

def _read_flows(path: Path) -> list[Any]:
    from mitmproxy import io

    with path.open("rb") as f:
        return list(io.FlowReader(f).stream())


def test_flow_comment_and_restored_url(gateways: GatewayFactory, emulator: Emulator, tmp_path: Path) -> None:
    flows_file = tmp_path / "flows.mitm"
    gw = gateways.start(gemini_accounts(emulator.url, "alice"), extra_args=["--set", f"save_stream_file={flows_file}"])
    client = gw.openai()
    u1 = client.chat.completions.create(model="gpt-4o", messages=user("json flow")).usage
    u2 = list(client.chat.completions.create(model="gpt-4o-mini", messages=user("stream flow"), stream=True,
                                             stream_options={"include_usage": True}))[-1].usage
    emulator.rules({"reply": {"chunks": ["a", "b"]}, "cut_after": 1, "times": 1})
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="gpt-4o", messages=user("cut flow"), stream=True))
    httpx.get(gw.v1 + "/nope")
    gateways.stop(gw)

    flows = [f for f in _read_flows(flows_file) if f.request.path != "/healthz"]
    assert len(flows) == 4, [(f.request.method, f.request.pretty_url, f.comment) for f in flows]
    plain, streamed, cut, missing = flows
    assert plain.comment == ("gpt-4o→gemini-3.8-flash · alice@example.com · "
                             f"{u1.prompt_tokens}+{u1.completion_tokens} tok")
    assert plain.request.path == "/v1/chat/completions" and plain.response.status_code == 200

    assert streamed.comment == ("gpt-4o-mini→gemini-3.5-flash-lite · alice@example.com · "
                                f"{u2.prompt_tokens}+{u2.completion_tokens} tok")
    # the client's request, not the loopback relay hop
    assert streamed.request.method == "POST" and streamed.request.path == "/v1/chat/completions"
    assert "__gateway_relay__" not in streamed.request.pretty_url
    # the URL the client called, not the reverse-mode placeholder target the gateway never contacts
    assert plain.request.url == streamed.request.url == gw.v1 + "/chat/completions"
    assert json.loads(streamed.request.content)["messages"][0]["content"] == "stream flow"
    assert streamed.response.status_code == 200
    assert streamed.response.headers["x-mapped-model"] == "gemini-3.5-flash-lite"

    assert cut.request.path == "/v1/chat/completions" and cut.comment.startswith("cut: ")
    assert missing.comment == "refused 404 unknown_url"
    # mitmweb marks: a cut stream and a refusal stand out, each with its own mark; a success does not
    assert (plain.marked, streamed.marked, cut.marked, missing.marked) == ("", "", ":scissors:", ":no_entry:")


# ---- mapping hot reload ------------------------------------------------------------------------

def test_mapping_hot_reload(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "heidi"),
                        mappings_yaml="default: gemini-2.5-flash\nmappings:\n  my-model: gemini-2.5-pro\n")
    client = gw.openai()

    def mapped() -> str:
        return client.chat.completions.with_raw_response.create(
            model="my-model", messages=user("x")).headers["x-mapped-model"]

    assert mapped() == "gemini-2.5-pro"
    path = Path(gw.options["mappings"])

    def edit(text: str) -> None:  # atomic, like most editors: the gateway never sees a half-written file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    edit("default: gemini-2.5-flash\nmappings:\n  my-model: gemini-2.5-flash-lite\n  new-*: gemini-3-flash\n")
    deadline = time.monotonic() + 5
    while mapped() != "gemini-2.5-flash-lite":
        assert time.monotonic() < deadline, "the edit was not picked up"
        time.sleep(0.2)
    assert client.chat.completions.with_raw_response.create(
        model="new-thing", messages=user("x")).headers["x-mapped-model"] == "gemini-3-flash"
    assert "gemini-3-flash" in [m.id for m in client.models.list().data]
    # a broken edit keeps the last good mapping (and says so in the log)
    edit("mappings: [oops\n")
    deadline = time.monotonic() + 5
    while "keeping the previous" not in gw.log():
        assert mapped() == "gemini-2.5-flash-lite"
        assert time.monotonic() < deadline, "the broken edit was never noticed"
        time.sleep(0.2)
    assert mapped() == "gemini-2.5-flash-lite"
    gateways.stop(gw)
