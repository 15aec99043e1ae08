"""The Gemini-native surface through a real mitmdump, driven by google-genai (the official SDK,
`http_options.base_url` at the gateway) and raw HTTP where the SDK has no switch (the JSON-array
stream, `?key=`). google-genai 3.x calls /v1/models/{model}:{verb}; gemini-cli calls /v1beta/...
(both captured against a logging server), so both versions are exercised.

What is proved: the pool serves Google's API with rotation (a rate-limited first account, answered
by the second), the client's key never goes upstream (the emulator's log), errors come in Google's
envelope so the SDK raises ClientError/ServerError, Vertex AI and Cloud Code get the body in their
own wrapping, thought signatures never go to a credential that did not issue them.
"""

from __future__ import annotations

import json
import secrets
import threading
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from mitmproxy import io

from tests.conftest import Emulator, Gateway, GatewayFactory, wait_for
from tests.emulator.embeddings import embedding
from tests.test_operator_e2e import request_lines

pytestmark = pytest.mark.e2e

SALT = secrets.token_hex(6)
GATEWAY_KEY = f"gw-native-{SALT}"
KEY_A, KEY_B = f"AIzaSy-native-a-{SALT}", f"AIzaSy-native-b-{SALT}"
FLASH = "gemini-2.5-flash"
GEM3 = "gemini-3.5-flash"
DUMMY = "skip_thought_signature_validator"


def gemini_pool(emu: Emulator, *keys: str) -> str:
    return "accounts:" + "".join(f"""
  - provider: gemini
    label: acc-{i}
    api_key: {k}
    base_url: {emu.url}""" for i, k in enumerate(keys))


def client(gw: Gateway, key: str = GATEWAY_KEY, version: str | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=gw.url, timeout=20_000, api_version=version,
                                retry_options=types.HttpRetryOptions(attempts=1))
    return genai.Client(api_key=key, http_options=options)


def generate_calls(emu: Emulator) -> list[dict[str, Any]]:
    return [r for r in emu.log() if ":generateContent" in r["path"] or ":streamGenerateContent" in r["path"]
            or ":countTokens" in r["path"]]


def nowhere_upstream(emu: Emulator, secret: str) -> None:
    for r in emu.log():
        assert secret not in json.dumps(r), f"the client's key went upstream: {r['path']}"


@pytest.fixture(scope="module")
def pooled(gateways: GatewayFactory, emulator_proc: Emulator, tmp_path_factory) -> Gateway:
    flows = tmp_path_factory.mktemp("native-flows") / "flows"
    return gateways.start(gemini_pool(emulator_proc, KEY_A, KEY_B), auth_mode="strict", api_key=GATEWAY_KEY,
                          extra_args=["--set", f"save_stream_file={flows}"])


# Rate limits rest a model on an account (quotas are per model): each version asks another model.
@pytest.mark.parametrize("version, model", [(None, "gemini-2.5-flash"), ("v1beta", "gemini-2.5-flash-lite")])
def test_google_genai_is_served_by_the_second_account_when_the_first_is_rate_limited(
        pooled: Gateway, emulator: Emulator, version: str | None, model: str) -> None:
    emulator.rules({"match": {"key": KEY_A}, "status": 429, "retry_delay": "40s"})
    gm = client(pooled, version=version)
    answer = gm.models.generate_content(model=model, contents="Hello",
                                        config=types.GenerateContentConfig(system_instruction="Be brief.",
                                                                           temperature=0.2))
    assert answer.text == f"Echo({model}): Hello"
    assert answer.sdk_http_response.headers["x-account-email"] == "acc-1"
    assert answer.usage_metadata.prompt_token_count > 0
    streamed = "".join(chunk.text or "" for chunk in gm.models.generate_content_stream(model=model,
                                                                                        contents="Hello stream"))
    assert streamed == f"Echo({model}): Hello stream"
    assert gm.models.count_tokens(model=model, contents="one two three").total_tokens == 3
    calls = generate_calls(emulator)
    assert [c["key"] for c in calls] == [KEY_A, KEY_B, KEY_B, KEY_B], "A refused once, then cooling: B serves"
    assert [c["path"].rsplit(":", 1)[1] for c in calls] == ["generateContent", "generateContent",
                                                            "streamGenerateContent", "countTokens"]
    assert calls[1]["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}], "role": "user"}
    assert calls[1]["body"]["generationConfig"] == {"temperature": 0.2}, "the body goes up as sent"
    assert calls[2]["query"] == {"alt": "sse"}
    nowhere_upstream(emulator, GATEWAY_KEY)


def test_a_wrong_key_is_refused_in_googles_shape(pooled: Gateway, emulator: Emulator) -> None:
    gm = client(pooled, key="not-the-key")  # (held: a Client closes its connections when collected)
    with pytest.raises(genai_errors.ClientError) as exc:
        gm.models.generate_content(model=FLASH, contents="Hi")
    assert exc.value.code == 401 and exc.value.status == "UNAUTHENTICATED"
    r = httpx.post(f"{pooled.url}/v1beta/models/{FLASH}:generateContent", json={"contents": []}, timeout=10)
    assert r.status_code == 401
    assert r.json() == {"error": {"code": 401, "message": r.json()["error"]["message"], "status": "UNAUTHENTICATED"}}
    assert generate_calls(emulator) == []


def test_the_key_in_the_query_string_is_accepted_and_kept_out_of_logs_and_flows(
        pooled: Gateway, emulator: Emulator) -> None:
    r = httpx.post(f"{pooled.url}/v1beta/models/{FLASH}:generateContent?key={GATEWAY_KEY}",
                   json={"contents": [{"role": "user", "parts": [{"text": "by query"}]}]}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == f"Echo({FLASH}): by query"
    nowhere_upstream(emulator, GATEWAY_KEY)
    flows = pooled.options.get("save_stream_file") or next(a.split("=", 1)[1] for a in pooled.proc.args
                                                            if str(a).startswith("save_stream_file="))
    with open(flows, "rb") as f:
        recorded = [fl for fl in io.FlowReader(f).stream() if "by query" in (fl.request.text or "")]
    assert recorded and all(GATEWAY_KEY not in fl.request.url for fl in recorded)
    assert "key=%5Bredacted%5D" in recorded[0].request.url or "key=[redacted]" in recorded[0].request.url
    assert GATEWAY_KEY not in pooled.log()


def test_an_answer_google_rerouted_is_told_in_the_log_line(pooled: Gateway, emulator: Emulator) -> None:
    """Google answers a deprecated name from its successor (the answer's modelVersion says which):
    the log line's served_model says so on Google's own API as on the OpenAI and Anthropic routes."""
    gm = client(pooled)
    assert gm.models.generate_content(model="gemini-2.5-pro", contents="old name").model_version == "gemini-3.8-flash"
    assert "".join(c.text or "" for c in gm.models.generate_content_stream(model="gemini-2.5-pro",
                                                                           contents="old streamed"))
    lines = wait_for(lambda: (found := [ln for ln in request_lines(pooled) if ln.get("client_model") == "gemini-2.5-pro"
                                        and ln.get("status") == "200"]) and len(found) >= 2 and found,
                     what="both log lines")
    assert [ln.get("served_model") for ln in lines[-2:]] == ["gemini-3.8-flash"] * 2, lines


def test_the_json_array_stream_and_a_stream_cut_mid_way(pooled: Gateway, emulator: Emulator) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "array form"}]}]}
    headers = {"x-goog-api-key": GATEWAY_KEY}
    emulator.rules({"times": 1, "reply": {"chunks": ["one ", "two ", "three"]}})
    r = httpx.post(f"{pooled.url}/v1beta/models/{FLASH}:streamGenerateContent", json=body, headers=headers, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    events = r.json()
    assert isinstance(events, list) and len(events) >= 3
    assert "".join(p.get("text", "") for e in events for p in e["candidates"][0]["content"].get("parts", [])) \
        == "one two three"
    assert events[-1]["candidates"][0]["finishReason"] == "STOP"
    # A stream the upstream cuts after it began ends with Google's error object, which the SDK raises.
    emulator.rules({"times": 1, "reply": {"chunks": ["a ", "b ", "c ", "d"]}, "cut_after": 2, "chunk_delay_ms": 20})
    seen, gm = [], client(pooled)
    with pytest.raises(genai_errors.ServerError) as exc:
        for chunk in gm.models.generate_content_stream(model=FLASH, contents="cut"):
            seen.append(chunk.text)
    assert seen and exc.value.code == 502 and "Upstream stream failed" in exc.value.message


def test_gemini_3_signatures_never_go_to_another_credential(pooled: Gateway, emulator: Emulator) -> None:
    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", parameters_json_schema={"type": "object", "properties": {"city": {"type": "string"}}})])
    emulator.rules({"times": 1, "reply": {"function_calls": [{"name": "get_weather", "args": {"city": "Paris"}}]}})
    gm = client(pooled)
    config = types.GenerateContentConfig(tools=[tool])
    first = gm.models.generate_content(model=GEM3, contents="Weather in Paris? [[tool:get_weather {}]]", config=config)
    issued_by = first.sdk_http_response.headers["x-account-email"]
    call = first.candidates[0].content
    assert call.parts[0].function_call.name == "get_weather" and call.parts[0].thought_signature
    # the issuing account is now rate-limited: the next step goes to the other one
    issuer_key = KEY_A if issued_by == "acc-0" else KEY_B
    emulator.rules({"match": {"key": issuer_key}, "status": 429, "retry_delay": "40s"})
    history = [types.Content(role="user", parts=[types.Part(text="Weather in Paris?")]), call,
               types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
                   name="get_weather", response={"temp": 21}))])]
    second = gm.models.generate_content(model=GEM3, contents=history, config=config)
    assert second.sdk_http_response.headers["x-account-email"] != issued_by
    accepted = [c for c in generate_calls(emulator) if c["key"] != issuer_key and "functionResponse" in json.dumps(c)]
    assert len(accepted) == 1, "no refusal and resend: the foreign signature was replaced before sending"
    model_turn = accepted[0]["body"]["contents"][1]
    assert model_turn["parts"][0]["thoughtSignature"] == DUMMY
    assert "Tool get_weather returned" in second.text


def test_models_are_listed_in_googles_shape(pooled: Gateway, emulator: Emulator) -> None:
    gm = client(pooled)
    names = [m.name for m in gm.models.list()]
    assert "models/gpt-4o" in names and any(n.startswith("models/gemini-") for n in names)  # mapping names, targets
    model = gm.models.get(model=FLASH)
    assert model.name == f"models/{FLASH}" and "generateContent" in model.supported_actions
    r = httpx.get(f"{pooled.url}/v1beta/models?pageSize=2", headers={"x-goog-api-key": GATEWAY_KEY}, timeout=10)
    assert len(r.json()["models"]) == 2 and r.json()["nextPageToken"] == "2"
    google = {"x-goog-api-key": GATEWAY_KEY, "x-goog-api-client": "google-genai-sdk/3.6.1"}
    r = httpx.get(f"{pooled.url}/v1/models/bad..name", headers=google, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    # the OpenAI SDK's listing at the same path is unchanged
    r = httpx.get(f"{pooled.url}/v1/models", headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=10)
    assert r.json()["object"] == "list"


def test_listing_at_v1_models_refuses_google_clients_in_googles_shape(pooled: Gateway) -> None:
    """google-genai lists at GET /v1/models: a wrong key there is Google's 401 (the SDK's ClientError
    with its status), and `?key=` works there as on every Google path."""
    gm = client(pooled, key="not-the-key")  # (held: a Client closes its connections when collected)
    with pytest.raises(genai_errors.ClientError) as exc:
        list(gm.models.list())
    assert exc.value.code == 401 and exc.value.status == "UNAUTHENTICATED"
    r = httpx.get(f"{pooled.url}/v1/models?key={GATEWAY_KEY}", timeout=10)
    assert r.status_code == 200 and "models" in r.json(), r.text
    r = httpx.get(f"{pooled.url}/v1/models/{FLASH}?key=not-the-key", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED", r.text
    # an OpenAI client's refusal there stays OpenAI's
    r = httpx.get(f"{pooled.url}/v1/models", headers={"authorization": "Bearer not-the-key"}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", r.text


def test_vertex_and_cloud_code_get_their_own_wrapping(gateways: GatewayFactory, emulator: Emulator) -> None:
    express, refresh, pro = f"AQ.native-{SALT}", f"1//rt-native-{SALT}", "gemini-2.5-pro"
    gw = gateways.start(f"""accounts:
  - provider: vertex
    label: vertex-express
    api_key: {express}
    base_url: {emulator.url}
    models: ["{FLASH}"]
  - provider: cloudcode
    email: cc@example.com
    refresh_token: {refresh}
    client_id: cc.apps.googleusercontent.com
    client_secret: GOCSPX-native-{SALT}
    project: project-cc
    token_url: {emulator.url}/token
    base_url: {emulator.url}
    models: ["{pro}"]
""")
    gm = client(gw, key="anything")
    assert gm.models.generate_content(model=FLASH, contents="via vertex").text == f"Echo({FLASH}): via vertex"
    assert gm.models.count_tokens(model=FLASH, contents="a b").total_tokens == 2
    answer = gm.models.generate_content(model=pro, contents="via code assist")
    assert answer.text == f"Echo({pro}): via code assist"
    assert answer.sdk_http_response.headers["x-account-email"] == "cc@example.com"
    streamed = "".join(ch.text or "" for ch in gm.models.generate_content_stream(model=pro, contents="cc stream"))
    assert streamed == f"Echo({pro}): cc stream"
    assert gm.models.count_tokens(model=pro, contents="x y z").total_tokens == 3
    calls = generate_calls(emulator)
    vertex = [c for c in calls if c["path"].startswith("/v1/publishers/google/models/")]
    assert [c["path"] for c in vertex] == [f"/v1/publishers/google/models/{FLASH}:generateContent",
                                           f"/v1/publishers/google/models/{FLASH}:countTokens"]
    assert vertex[1]["body"] == {"contents": [{"parts": [{"text": "a b"}], "role": "user"}]}
    code_assist = [c for c in calls if c["path"].startswith("/v1internal:")]
    assert [c["path"] for c in code_assist] == ["/v1internal:generateContent", "/v1internal:streamGenerateContent",
                                                "/v1internal:countTokens"]
    envelope = code_assist[0]["body"]
    assert set(envelope) == {"model", "project", "user_prompt_id", "request"}
    assert envelope["model"] == pro and envelope["project"] == "project-cc"
    assert envelope["request"]["contents"][0]["parts"][0]["text"] == "via code assist"
    assert code_assist[2]["body"] == {"request": {"model": f"models/{pro}",
                                                  "contents": [{"parts": [{"text": "x y z"}], "role": "user"}]}}


def test_openai_compatible_accounts_are_refused_with_a_clear_400(gateways: GatewayFactory,
                                                                 emulator: Emulator) -> None:
    gw = gateways.start(f"""accounts:
  - provider: openai
    label: local-llm
    api_key: sk-local-{SALT}
    base_url: {emulator.url}/openai/v1
""", mappings_yaml='mappings:\n  "*": ~\n')
    gm = client(gw, key="anything")
    with pytest.raises(genai_errors.ClientError) as exc:
        gm.models.generate_content(model=FLASH, contents="Hi")
    assert exc.value.code == 400 and exc.value.status == "INVALID_ARGUMENT"
    assert "not served by 'openai' accounts" in exc.value.message
    # embeddings are: through the account's own embeddings endpoint, in request order
    result = gm.models.embed_content(model="emulator-embed", contents=["first text", "second text"])
    assert [e.values for e in result.embeddings] == [embedding("first text", 64, None),
                                                     embedding("second text", 64, None)]
    (call,) = [r for r in emulator.log() if r["path"] == "/openai/v1/embeddings"]
    assert call["body"]["input"] == ["first text", "second text"]


def test_embeddings_go_to_gemini_keys_as_sent(pooled: Gateway, emulator: Emulator) -> None:
    gm = client(pooled)
    config = types.EmbedContentConfig(output_dimensionality=8, task_type="RETRIEVAL_QUERY")
    result = gm.models.embed_content(model="gemini-embedding-001", contents=["alpha", "beta"], config=config)
    assert [e.values for e in result.embeddings] == [embedding("alpha", 3072, 8), embedding("beta", 3072, 8)]
    r = httpx.post(f"{pooled.url}/v1beta/models/gemini-embedding-001:embedContent",
                   headers={"x-goog-api-key": GATEWAY_KEY}, timeout=10,
                   json={"content": {"parts": [{"text": "gamma"}]}, "outputDimensionality": 4})
    assert r.status_code == 200 and r.json() == {"embedding": {"values": embedding("gamma", 3072, 4)}}
    batch, one = [c for c in emulator.log() if "embed" in c["path"].lower()]
    assert batch["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert [q["model"] for q in batch["body"]["requests"]] == ["models/gemini-embedding-001"] * 2
    assert batch["body"]["requests"][0]["taskType"] == "RETRIEVAL_QUERY"
    assert one["body"] == {"content": {"parts": [{"text": "gamma"}]}, "outputDimensionality": 4}
    assert {batch["key"], one["key"]} <= {KEY_A, KEY_B}


def test_every_refusal_on_these_paths_is_googles_shape(pooled: Gateway, emulator: Emulator) -> None:
    url, key = f"{pooled.url}/v1beta/models/{FLASH}", {"x-goog-api-key": GATEWAY_KEY}
    refusals = [
        (httpx.post(f"{url}:generateContent", content=b"x", headers={**key, "content-type": "text/plain"}), 415,
         "INVALID_ARGUMENT"),  # refused on its headers, before the body is read
        (httpx.get(f"{url}:generateContent", headers=key), 405, "UNIMPLEMENTED"),
        (httpx.post(f"{url}:predictLongRunning", json={}, headers=key), 404, "NOT_FOUND"),
        (httpx.post(f"{url}:generateContent", content=b"{not json", headers={**key, "content-type": "application/json"}),
         400, "INVALID_ARGUMENT"),
        (httpx.post(f"{pooled.url}/v1beta/models/bad..name:generateContent", json={}, headers=key), 400,
         "INVALID_ARGUMENT"),
        (httpx.post(f"{pooled.url}/v1beta/models/{FLASH}:generateContent", json={"contents": []},
                    headers={"x-goog-api-key": "wrong"}), 401, "UNAUTHENTICATED"),
    ]
    for r, status, name in refusals:
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"error"} and body["error"]["code"] == status and body["error"]["status"] == name, r.text
        assert body["error"]["message"]
    # Google's own 400 for a body it refuses comes back with its words
    r = httpx.post(f"{url}:generateContent", json={"contents": [{"role": "user", "parts": [{"txt": "typo"}]}]},
                   headers=key, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "txt" in r.json()["error"]["message"]


def test_a_fallback_chain_serves_the_path_model(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(gemini_pool(emulator, f"AIzaSy-chain-{SALT}"), mappings_yaml="""
mappings:
  team-model: [gemini-2.5-pro, gemini-2.5-flash]
""")
    emulator.rules({"match": {"model": "gemini-2.5-pro"}, "status": 429, "retry_delay": "600s"})
    gm = client(gw, key="anything")
    answer = gm.models.generate_content(model="team-model", contents="chained")
    assert answer.text == "Echo(gemini-2.5-flash): chained"
    assert answer.sdk_http_response.headers["x-mapped-model"] == "gemini-2.5-flash"
    streamed = "".join(ch.text or "" for ch in gm.models.generate_content_stream(model="team-model", contents="again"))
    assert streamed == "Echo(gemini-2.5-flash): again"
    paths = [c["path"] for c in generate_calls(emulator)]
    assert paths == ["/v1beta/models/gemini-2.5-pro:generateContent", "/v1beta/models/gemini-2.5-flash:generateContent",
                     "/v1beta/models/gemini-2.5-flash:streamGenerateContent"], "the resting model is not asked again"


def test_a_stream_open_at_shutdown_ends_with_googles_error_object(gateways: GatewayFactory,
                                                                   emulator: Emulator) -> None:
    """SIGTERM (Ctrl-C in scripts/run) mid-stream: after the grace period the stream ends with
    Google's error object and a log line, as on the OpenAI and Anthropic routes, not a cut body."""
    gw = gateways.start(gemini_pool(emulator, KEY_A), shutdown_grace_seconds=1)
    emulator.rules({"match": {"path_contains": "stream"}, "times": 1, "chunk_delay_ms": 1500,
                    "reply": {"chunks": [f"long{i} " for i in range(10)]}})
    got: list[str] = []
    first = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", f"{gw.url}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse", timeout=30,
                          json={"contents": [{"role": "user", "parts": [{"text": "x"}]}]}) as r:
            for chunk in r.iter_text():
                got.append(chunk)
                first.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first.wait(15)
    gw.proc.terminate()
    reader.join(30)
    assert gw.proc.wait(30) == 0
    events = [json.loads(line[6:]) for line in "".join(got).splitlines() if line.startswith("data: ")]
    assert "long0" in json.dumps(events[0]) and "long9" not in "".join(got)
    assert events[-1]["error"]["code"] >= 500, events[-1]
    assert "shutting down" in events[-1]["error"]["message"], events[-1]
    log = gw.log()
    [line] = [ln for ln in log.splitlines() if "] method=POST" in ln and ":{verb}" in ln]
    assert "stream_error=" in line and "client_gone" not in line, line
    assert "Traceback" not in log and "CancelledError" not in log, log
