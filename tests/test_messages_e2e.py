"""Anthropic's Messages API through a real mitmdump, driven by the official `anthropic` SDK.

What Claude Code and the SDKs rely on (captured from Claude Code 2.1 and read from the SDK's
types and stream accumulator): `POST /v1/messages` with and without `?beta=true`, whole answers
and the event stream (`messages.stream` + `get_final_message`), tool loops with `tool_result`,
`count_tokens`, thinking blocks whose signatures survive a Gemini 3 tool loop across a two-key
pool, Anthropic's error shapes and statuses (the SDK picks its exception class and its retries
from them), `ping` during upstream silences, and `models.list()` in Anthropic's shape.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import Emulator, Gateway, GatewayFactory, gemini_accounts
from tests.test_pool_e2e import accounts, email, gemini, key

pytestmark = pytest.mark.e2e

GEM3 = "gemini-3.8-flash"
MAPPINGS = f"default: {GEM3}\nmappings:\n  claude-sonnet-4-6: {GEM3}\n  claude-haiku-4-5: gemini-2.5-flash\n"
MODEL = "claude-sonnet-4-6"
DUMMY = "skip_thought_signature_validator"
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def client(gw: Gateway, **kw: Any) -> anthropic.Anthropic:
    kw.setdefault("api_key", gw.options.get("api_key", "sk-ant-test"))
    kw.setdefault("max_retries", 0)  # the tests check the gateway's retries, not the SDK's
    kw.setdefault("timeout", 30)
    return anthropic.Anthropic(base_url=gw.url, **kw)


@pytest.fixture(scope="module")
def gw(gateways: GatewayFactory, emulator_proc: Emulator) -> Gateway:
    return gateways.start(gemini_accounts(emulator_proc.url, "ant-alice"), mappings_yaml=MAPPINGS, keepalive_seconds=1)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def generate_bodies(emulator: Emulator) -> list[dict[str, Any]]:
    return [r["body"] for r in emulator.log() if "generatecontent" in r["path"].lower()]


# ---- answers -----------------------------------------------------------------------------------

def test_create_answers_a_message(gw: Gateway, emulator: Emulator) -> None:
    raw = client(gw).messages.with_raw_response.create(model=MODEL, max_tokens=200, messages=user("Hello"),
                                                        system="Be brief.", extra_body={"temperature": 0.3,
                                                                                        "top_k": 20})
    msg = raw.parse()
    assert msg.id.startswith("msg_") and msg.model == MODEL and msg.role == "assistant"
    assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == f"Echo({GEM3}): Hello"
    assert msg.stop_reason == "end_turn" and msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers["request-id"].startswith("req_") and raw.headers["x-mapped-model"] == GEM3
    [body] = generate_bodies(emulator)
    assert body["systemInstruction"]["parts"][0]["text"] == "Be brief."
    assert body["generationConfig"]["topK"] == 20 and body["generationConfig"]["temperature"] == 0.3


def test_beta_path_and_bearer_key(gw: Gateway) -> None:
    # what Claude Code sends: ?beta=true, its beta header list, and (with ANTHROPIC_AUTH_TOKEN) a Bearer key
    c = anthropic.Anthropic(base_url=gw.url, auth_token="sk-bearer", max_retries=0)
    msg = c.beta.messages.create(model=MODEL, max_tokens=100, messages=user("beta"),
                                 betas=["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"])
    assert msg.content[0].text.endswith("beta")


def test_stream_helper_builds_the_final_message_with_thinking(gw: Gateway, emulator: Emulator) -> None:
    with client(gw).messages.stream(model=MODEL, max_tokens=2000, messages=user("think then answer"),
                                    thinking={"type": "adaptive"}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == f"Echo({GEM3}): think then answer"
    kinds = [b.type for b in final.content]
    assert kinds == ["thinking", "text"] and final.content[0].thinking
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    [body] = generate_bodies(emulator)
    assert body["generationConfig"]["thinkingConfig"]["includeThoughts"] is True


def test_tool_loop_with_tool_result(gw: Gateway, emulator: Emulator) -> None:
    c = client(gw)
    ask = user('Weather in Paris? [[tool:get_weather {"city": "Paris"}]]')
    first = c.messages.create(model=MODEL, max_tokens=500, tools=[WEATHER], messages=ask)
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.id.startswith("toolu_") and call.name == "get_weather" and call.input == {"city": "Paris"}
    history = ask + [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                   "content": [{"type": "text", "text": "sunny, 21 C"}]}]}]
    with c.messages.stream(model=MODEL, max_tokens=500, tools=[WEATHER], messages=history) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn" and "Tool get_weather returned" in final.content[0].text
    second = generate_bodies(emulator)[1]
    [call_part] = [p for p in second["contents"][-2]["parts"] if "functionCall" in p]
    # the signature Gemini 3 issued came back through the toolu_ id (the emulator refuses a foreign one)
    assert call_part["thoughtSignature"] not in (None, DUMMY)
    [result] = [p["functionResponse"] for p in second["contents"][-1]["parts"] if "functionResponse" in p]
    assert result["name"] == "get_weather" and "sunny" in json.dumps(result)


def test_count_tokens(gw: Gateway, emulator: Emulator) -> None:
    count = client(gw).messages.count_tokens(model=MODEL, system="You count.", tools=[WEATHER],
                                             messages=user("one two three four"))
    assert count.input_tokens > 4
    [entry] = [r for r in emulator.log() if "counttokens" in r["path"].lower()]
    assert f"models/{GEM3}" in json.dumps(entry["body"]) and "one two three four" in json.dumps(entry["body"])


def test_web_search_server_tool_is_google_search_with_citations(gw: Gateway, emulator: Emulator) -> None:
    emulator.rules({"times": 1, "reply": {"text": "Gemini 3.8 Flash is out.", "grounding": {
        "queries": ["gemini 3.8 release"], "sources": [{"uri": "https://blog.google/g38", "title": "Gemini 3.8"}],
        "supports": [{"text": "Gemini 3.8 Flash is out.", "sources": [0]}]}}})
    msg = client(gw).messages.create(model=MODEL, max_tokens=500, messages=user("What is new?"),
                                     tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}])
    kinds = [b.type for b in msg.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    assert msg.content[0].input == {"query": "gemini 3.8 release"}
    assert msg.content[1].content[0].url == "https://blog.google/g38"
    assert msg.content[2].citations[0].url == "https://blog.google/g38"
    assert msg.usage.server_tool_use.web_search_requests == 1
    [body] = generate_bodies(emulator)
    assert {"googleSearch": {}} in body["tools"]


def test_models_list_in_anthropic_shape(gw: Gateway) -> None:
    page = client(gw).models.list()
    ids = [m.id for m in page.data]
    assert MODEL in ids and all(m.type == "model" for m in page.data)
    assert client(gw).models.retrieve(MODEL).id == MODEL
    # without anthropic-version, the OpenAI shape as before
    assert httpx.get(gw.v1 + "/models").json()["object"] == "list"


def test_ping_during_upstream_silence(gw: Gateway, emulator: Emulator) -> None:
    emulator.rules({"reply": {"chunks": ["before ", "after"]}, "chunk_delay_ms": 2500, "times": 1})
    r = httpx.post(gw.url + "/v1/messages", timeout=30, headers={"anthropic-version": "2023-06-01"},
                   json={"model": MODEL, "max_tokens": 100, "stream": True, "messages": user("x")})
    raw = r.text
    first, second = raw.index('"before "'), raw.index('"after"')
    assert raw.count('event: ping\ndata: {"type": "ping"}\n\n', first, second) >= 1, raw
    assert ": keep-alive" not in raw and raw.endswith('event: message_stop\ndata: {"type":"message_stop"}\n\n')


# ---- Gemini 3 signatures across a two-key pool -------------------------------------------------

def test_thinking_signatures_across_a_two_key_pool(gateways: GatewayFactory, emulator: Emulator) -> None:
    """Step 1 on one key calls a tool; step 2 lands on the other key (round robin), which must not
    get the first key's signature (Gemini: "Corrupted thought signature.") but the dummy; step 3
    returns to the first key with the signature it issued, which is sent back for real."""
    gw = gateways.start(accounts(gemini(emulator, "sig-a"), gemini(emulator, "sig-b")), mappings_yaml=MAPPINGS)
    emulator.rules({"times": 1, "reply": {"function_calls": [{"name": "get_weather", "args": {"city": "Paris"}}]}},
                   {"times": 1, "reply": {"function_calls": [{"name": "get_weather", "args": {"city": "Oslo"}}]}},
                   {"times": 1, "reply": {"text": "Both are sunny."}})
    c = client(gw)
    history: list[dict[str, Any]] = user("Weather in Paris, then Oslo?")
    served: list[str] = []
    for step in range(3):
        raw = c.messages.with_raw_response.create(model=MODEL, max_tokens=2000, tools=[WEATHER], messages=history,
                                                  thinking={"type": "enabled", "budget_tokens": 1024})
        msg = raw.parse()
        served.append(raw.headers["x-account-email"])
        if step == 2:
            assert msg.content[-1].text == "Both are sunny."
            break
        assert msg.stop_reason == "tool_use"
        [call] = [b for b in msg.content if b.type == "tool_use"]
        # as Claude Code does: the assistant turn exactly as answered, then only the tool's result
        history += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}]
    assert served == [email("sig-a"), email("sig-b"), email("sig-a")]
    bodies = [r for r in emulator.log() if "generatecontent" in r["path"].lower()]
    assert [r["key"] for r in bodies] == [key("sig-a"), key("sig-b"), key("sig-a")]
    sigs = [[p.get("thoughtSignature") for ct in r["body"]["contents"] for p in ct["parts"] if "functionCall" in p]
            for r in bodies]
    assert sigs[1] == [DUMMY], "another key's signature is never sent"
    assert sigs[2][0] not in (None, DUMMY) and sigs[2][1] == DUMMY, "the issuing key gets its own signature back"


# ---- errors ------------------------------------------------------------------------------------

def error_of(fn: Any, kind: type[anthropic.APIStatusError]) -> anthropic.APIStatusError:
    with pytest.raises(kind) as info:
        fn()
    err = info.value
    assert err.body["type"] == "error" and set(err.body["error"]) == {"type", "message"}
    assert err.response.headers["request-id"] == err.body["request_id"] == err.request_id
    return err


def test_error_shapes_and_statuses(gw: Gateway, emulator: Emulator) -> None:
    c = client(gw)
    err = error_of(lambda: c.messages.create(model=MODEL, messages=user("x"), max_tokens=0),
                   anthropic.BadRequestError)
    assert err.body["error"]["type"] == "invalid_request_error" and "max_tokens" in err.body["error"]["message"]
    raw = httpx.post(gw.url + "/v1/messages", json={"model": MODEL, "messages": user("x")})
    assert raw.status_code == 400 and raw.json()["error"]["message"] == "max_tokens: Field required"
    error_of(lambda: c.messages.create(model=MODEL, max_tokens=10, messages=user("x"),
                                       tools=[{"type": "code_execution_20250825", "name": "code_execution"}]),
             anthropic.BadRequestError)
    # a failure after the first byte: Anthropic's error event, which the SDK raises
    emulator.rules({"times": 1, "reply": {"chunks": ["a", "b", "c"]}, "cut_after": 1})
    with pytest.raises(anthropic.APIStatusError) as info:
        with c.messages.stream(model=MODEL, max_tokens=10, messages=user("x")) as stream:
            stream.get_final_message()
    assert info.value.body["error"]["type"] == "api_error"


def test_overloaded_upstream_is_anthropic_529(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(accounts(gemini(emulator, "ovl-a")), mappings_yaml=MAPPINGS)
    # an upstream that is overloaded on every attempt: Anthropic's 529, which the SDK would retry
    emulator.rules({"status": 503, "message": "The model is overloaded."})
    err = error_of(lambda: client(gw).messages.create(model=MODEL, max_tokens=10, messages=user("x")),
                   anthropic.InternalServerError)
    assert err.status_code == 529 and err.body["error"]["type"] == "overloaded_error"
    assert "overloaded" in err.body["error"]["message"]


def test_rate_limited_pool_is_a_429_with_retry_after(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(accounts(gemini(emulator, "rl-a")), mappings_yaml=MAPPINGS)
    emulator.rules({"status": 429, "retry_delay": "30s"})
    err = error_of(lambda: client(gw).messages.create(model=MODEL, max_tokens=10, messages=user("x")),
                   anthropic.RateLimitError)
    assert err.body["error"]["type"] == "rate_limit_error" and int(err.response.headers["retry-after"]) >= 1


def test_auth_refusals_are_anthropic_shaped_before_the_body_is_read(gateways: GatewayFactory,
                                                                    emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "ant-auth"), auth_mode="strict", api_key="gw-secret",
                        mappings_yaml=MAPPINGS)
    err = error_of(lambda: client(gw, api_key="wrong").messages.create(model=MODEL, max_tokens=10,
                                                                       messages=user("x")),
                   anthropic.AuthenticationError)
    assert err.body["error"]["type"] == "authentication_error"
    ok = client(gw, api_key="gw-secret").messages.create(model=MODEL, max_tokens=10, messages=user("x"))
    assert ok.content[0].text.endswith("x")
    bearer = anthropic.Anthropic(base_url=gw.url, auth_token="gw-secret", max_retries=0)
    assert bearer.messages.count_tokens(model=MODEL, messages=user("x")).input_tokens > 0
    # an unknown path under /v1/messages is Anthropic's 404, a wrong method its 405 in its shape too
    r = httpx.post(gw.url + "/v1/messages/batches", headers={"x-api-key": "gw-secret"}, json={})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error" and r.headers["request-id"]
    r = httpx.get(gw.url + "/v1/messages", headers={"x-api-key": "gw-secret"})
    assert r.status_code == 405 and r.json()["type"] == "error"
    # Anthropic's SDK lists at /v1/models: its refusal there is Anthropic's too
    with pytest.raises(anthropic.AuthenticationError) as exc:
        client(gw, api_key="wrong").models.list()
    assert exc.value.body["error"]["type"] == "authentication_error" and exc.value.response.headers["request-id"]


def test_count_tokens_on_vertex_and_cloud_code(gateways: GatewayFactory, emulator: Emulator) -> None:
    """Vertex AI takes the system instruction and tools at the top level of countTokens; Code Assist
    takes contents only, so the system text and the declarations are counted as a leading user text."""
    salt = "ant-count"
    gw = gateways.start(f"""accounts:
  - provider: vertex
    label: vertex-express
    api_key: AQ.{salt}
    base_url: {emulator.url}
    models: ["{GEM3}"]
  - provider: cloudcode
    email: cc@example.com
    refresh_token: 1//rt-{salt}
    client_id: cc.apps.googleusercontent.com
    client_secret: GOCSPX-{salt}
    project: project-cc
    token_url: {emulator.url}/token
    base_url: {emulator.url}
    models: ["gemini-2.5-flash"]
""", mappings_yaml=MAPPINGS)
    c = client(gw)
    ask = {"system": "You count.", "tools": [WEATHER], "messages": user("one two three")}
    via_vertex = c.messages.count_tokens(model=MODEL, **ask).input_tokens  # claude-sonnet-4-6 -> gemini-3.8-flash
    via_code_assist = c.messages.count_tokens(model="claude-haiku-4-5", **ask).input_tokens  # -> gemini-2.5-flash
    assert via_vertex > 3 and via_code_assist > 3
    counted = [r for r in emulator.log() if "counttokens" in r["path"].lower()]
    assert [r["path"] for r in counted] == [f"/v1/publishers/google/models/{GEM3}:countTokens",
                                            "/v1internal:countTokens"]
    vertex, code_assist = counted[0]["body"], counted[1]["body"]
    assert vertex["systemInstruction"]["parts"][0]["text"] == "You count." and vertex["tools"]
    assert set(code_assist) == {"request"} and set(code_assist["request"]) == {"model", "contents"}
    first = json.dumps(code_assist["request"]["contents"][0])
    assert "You count." in first and "get_weather" in first and "one two three" in first


def test_a_clients_allow_list_shapes_its_anthropic_model_list(gateways: GatewayFactory, emulator: Emulator,
                                                               tmp_path: Any) -> None:
    clients = tmp_path / "clients.yaml"
    clients.write_text("clients:\n  - name: haiku-only\n    key_env: HAIKU_KEY\n    models: [\"claude-haiku-*\"]\n")
    gw = gateways.start(gemini_accounts(emulator.url, "ant-clients"), mappings_yaml=MAPPINGS, clients=str(clients),
                        api_key="operator-key", env={"HAIKU_KEY": "sk-haiku-only"})
    ids = [m.id for m in client(gw, api_key="sk-haiku-only").models.list().data]
    assert ids == ["claude-haiku-4-5"]
    assert MODEL in [m.id for m in client(gw, api_key="operator-key").models.list().data]
    err = error_of(lambda: client(gw, api_key="sk-haiku-only").messages.create(model=MODEL, max_tokens=10,
                                                                               messages=user("x")),
                   anthropic.NotFoundError)
    assert err.body["error"]["type"] == "not_found_error"
