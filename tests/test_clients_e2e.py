"""Per-client keys, allow-lists and limits through two real mitmdump processes sharing one real Redis."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Emulator, GatewayFactory, RedisServer, gemini_accounts, wait_for
from tests.test_operator_e2e import read_flows, scrape, value

pytestmark = pytest.mark.e2e

OPERATOR = "op-key-not-a-client"
KEYS = {"alice": "sk-gw-alice-secret-1", "bob": "sk-gw-bob-secret-22", "carol": "sk-gw-carol-secret-333"}


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def clients_yaml(bob_name: str = "bob", carol: bool = True) -> str:
    text = f"""\
# the team's keys (comments survive scripts/clients)
clients:
  - name: alice
    key_sha256: {sha(KEYS['alice'])}
    models: ["gpt-4o*"]
    rpm: 2
  - name: {bob_name}
    key_sha256: {sha(KEYS['bob'])}
    tokens_per_day: 5
"""
    if carol:
        text += """\
  - name: carol
    key_env: CAROL_KEY
    max_concurrent: 1
"""
    return text


@pytest.fixture
def pair(gateways: GatewayFactory, emulator: Emulator, redis_url: str, tmp_path: Path):
    path = tmp_path / "clients.yaml"
    path.write_text(clients_yaml())
    accounts = gemini_accounts(emulator.url, "team")
    env = {"CAROL_KEY": KEYS["carol"]}
    a = gateways.start(accounts, state=redis_url, clients=str(path), api_key=OPERATOR, env=env)
    b = gateways.start(accounts, state=redis_url, clients=str(path), api_key=OPERATOR, env=env)
    return a, b, path


def chat(gw, key: str, model: str = "gpt-4o", **kw):
    return gw.openai(api_key=key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], **kw)


def test_keys_allow_lists_and_the_model_list(pair) -> None:
    a, b, _ = pair
    with pytest.raises(openai.AuthenticationError) as err:
        chat(a, "sk-gw-nobody")
    assert err.value.code == "invalid_api_key"
    for path in ("/v1/models", "/metrics", "/gateway/accounts", "/gateway/clients"):
        assert httpx.get(a.url + path, headers={"authorization": "Bearer nope"}).status_code == 401, path
        assert httpx.get(a.url + path).status_code == 401, path
    assert httpx.get(a.url + "/healthz").status_code == 200

    with pytest.raises(openai.NotFoundError) as err:
        chat(b, KEYS["alice"], model="o3")
    assert err.value.code == "model_not_found" and "do not have access" in err.value.message
    alice_models = [m.id for m in a.openai(api_key=KEYS["alice"]).models.list()]
    all_models = [m.id for m in a.openai(api_key=OPERATOR).models.list()]
    assert alice_models and all(m.startswith("gpt-4o") for m in alice_models)
    assert "o3" in all_models and len(all_models) > len(alice_models)
    with pytest.raises(openai.NotFoundError):
        a.openai(api_key=KEYS["alice"]).models.retrieve("o3")
    anthropic_list = httpx.get(a.v1 + "/models", headers={"x-api-key": KEYS["alice"], "anthropic-version": "2023-06-01"})
    google_list = httpx.get(a.url + "/v1beta/models", headers={"x-goog-api-key": KEYS["alice"]})
    assert [m["id"] for m in anthropic_list.json()["data"]] == alice_models, anthropic_list.text
    assert {m["name"].removeprefix("models/") for m in google_list.json()["models"]} <= set(alice_models)
    assert httpx.get(a.v1 + "/models/o3", headers={"x-api-key": KEYS["alice"],
                                                   "anthropic-version": "2023-06-01"}).status_code == 404
    with pytest.raises(openai.NotFoundError) as err:  # every surface: embeddings too
        a.openai(api_key=KEYS["alice"]).embeddings.create(model="text-embedding-3-small", input="hi")
    assert err.value.code == "model_not_found"
    # the Gemini-native surface: the same checks, in Google's error envelope
    native = a.url + "/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    refused = httpx.post(native, headers={"x-goog-api-key": KEYS["alice"]}, json=body)
    assert refused.status_code == 404 and refused.json()["error"]["status"] == "NOT_FOUND", refused.text
    unknown = httpx.post(native, headers={"x-goog-api-key": "sk-gw-nobody"}, json=body)
    assert unknown.status_code == 401 and unknown.json()["error"]["code"] == 401, unknown.text
    served = httpx.post(native + "?key=" + KEYS["carol"], json=body)
    assert served.status_code == 200 and served.json()["candidates"], served.text
    # the operator key has no allow-list and no limits; carol (key_env) may use any model
    assert chat(a, OPERATOR, model="o3").parse().choices[0].message.content
    assert chat(a, KEYS["carol"], model="o3").parse().choices[0].message.content


def test_rpm_holds_across_instances(pair, redis_server: RedisServer) -> None:
    a, b, _ = pair
    first = chat(a, KEYS["alice"])
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    second = chat(b, KEYS["alice"], stream=True)  # a stream counts as one request too
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    second.parse().response.read()
    for gw in (a, b):
        with pytest.raises(openai.RateLimitError) as err:
            chat(gw, KEYS["alice"])
        assert err.value.code == "rate_limit_exceeded"
        retry = int(err.value.response.headers["retry-after"])
        assert 1 <= retry <= 60
        assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    # one budget across surfaces: Anthropic's Messages API answers the same refusal in its own shape
    messages = httpx.post(b.v1 + "/messages", headers={"x-api-key": KEYS["alice"], "anthropic-version": "2023-06-01"},
                          json={"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]})
    assert messages.status_code == 429 and messages.json()["error"]["type"] == "rate_limit_error", messages.text
    assert messages.headers["retry-after"] and messages.headers["x-ratelimit-remaining-requests"] == "0"
    not_allowed = httpx.post(b.v1 + "/messages", headers={"x-api-key": KEYS["alice"], "anthropic-version": "2023-06-01"},
                             json={"model": "claude-sonnet-4", "max_tokens": 16,
                                   "messages": [{"role": "user", "content": "hi"}]})
    assert not_allowed.status_code == 404 and not_allowed.json()["error"]["type"] == "not_found_error"
    # the operator's view: both instances' requests and refusals, in one place
    rows = httpx.get(b.url + "/gateway/clients", headers={"authorization": f"Bearer {OPERATOR}"}).json()["data"]
    alice = next(r for r in rows if r["name"] == "alice")
    assert alice["requests"] == 2 and alice["refused"] == {"rpm": 3, "model": 1} and alice["requests_last_minute"] == 2
    wait_for(lambda: httpx.get(b.url + "/gateway/clients", headers={"authorization": f"Bearer {KEYS['alice']}"})
             .json()["data"][0]["models"].get("gpt-4o", {}).get("requests") == 2, what="alice's model usage")
    own = httpx.get(a.url + "/gateway/clients", headers={"authorization": f"Bearer {KEYS['alice']}"}).json()["data"]
    assert [r["name"] for r in own] == ["alice"]  # a client sees only itself
    m = scrape(a, OPERATOR)
    chat_route = {"route": "/v1/chat/completions", "client": "alice"}
    assert value(m, "gateway_requests_total", **chat_route, status="200") == 1
    assert value(m, "gateway_requests_total", **chat_route, status="429") == 1
    assert value(m, "gateway_client_refusals_total", client="alice", limit="rpm") == 1
    # keys are nowhere: logs, Redis (only digests)
    for gw in (a, b):
        log = gw.log()
        assert "client=alice" in log
        assert not any(k in log for k in KEYS.values()) and OPERATOR not in log
    with redis_server.client() as r:
        dump = b"".join(k + b"".join(r.hgetall(k)) if r.type(k) == b"hash" else k for k in r.keys("*"))
    assert not any(k.encode() in dump for k in KEYS.values()) and sha(KEYS["alice"]).encode() in dump


def test_a_spent_daily_budget_holds_across_instances_and_survives_a_rename(pair) -> None:
    a, b, path = pair
    first = chat(a, KEYS["bob"])
    assert first.headers["x-ratelimit-limit-tokens"] == "5"
    assert first.headers["x-ratelimit-remaining-tokens"] == "5"  # admitted on the budget left before it
    usage = first.parse().usage
    assert usage.total_tokens > 5

    def refused_on_b() -> openai.RateLimitError | None:
        try:
            chat(b, KEYS["bob"])
        except openai.RateLimitError as exc:
            return exc
        return None  # the first answer's tokens are counted just after it ended

    err = wait_for(refused_on_b, what="bob's budget to be spent on the other instance")
    assert err.code == "insufficient_quota" and err.type == "insufficient_quota"
    headers = err.response.headers
    assert headers["x-should-retry"] == "false" and headers["x-ratelimit-remaining-tokens"] == "0"
    assert 0 < int(headers["retry-after"]) <= 86_400
    # renamed with the same key: the spent budget moves with it; carol removed: revoked at once
    path.write_text(clients_yaml(bob_name="robert", carol=False))
    wait_for(lambda: _status(a, KEYS["carol"]) == 401, timeout=3, what="carol's key to be revoked")
    wait_for(lambda: _status(b, KEYS["carol"]) == 401, timeout=3, what="carol's key to be revoked")
    with pytest.raises(openai.RateLimitError) as again:
        chat(b, KEYS["bob"])
    assert again.value.code == "insufficient_quota" and "'robert'" in again.value.message
    rows = httpx.get(a.url + "/gateway/clients", headers={"authorization": f"Bearer {OPERATOR}"}).json()["data"]
    robert = next(r for r in rows if r["name"] == "robert")
    assert robert["tokens_today"] == usage.total_tokens and robert["tokens_left_today"] == 0
    assert "bob" not in {r["name"] for r in rows}


def test_max_concurrent_holds_across_instances_until_the_stream_ends(pair, emulator: Emulator) -> None:
    a, b, _ = pair
    emulator.rules({"times": 1, "chunk_delay_ms": 400})  # carol's first answer streams slowly
    with chat_stream(a, KEYS["carol"]) as slow:
        lines = slow.iter_lines()
        next(lines)  # open: its slot is held
        with pytest.raises(openai.RateLimitError) as err:
            chat(b, KEYS["carol"])
        assert err.value.code == "rate_limit_exceeded" and err.value.response.headers["retry-after"] == "1"
        assert "at once" in err.value.message
        for _ in lines:
            pass
    wait_for(lambda: _status(b, KEYS["carol"]) == 200, timeout=5, what="carol's slot to be freed")


def chat_stream(gw, key: str):
    return httpx.stream("POST", gw.v1 + "/chat/completions", headers={"authorization": f"Bearer {key}"}, timeout=20,
                        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]})


def _status(gw, key: str) -> int:
    return httpx.post(gw.v1 + "/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).status_code


def test_without_redis_the_counters_persist_in_the_state_file(gateways: GatewayFactory, emulator: Emulator,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "clients.yaml"
    path.write_text(clients_yaml())
    accounts = gemini_accounts(emulator.url, "solo")
    state, flows = tmp_path / "state.json", tmp_path / "flows"
    gw = gateways.start(accounts, clients=str(path), state_file=str(state), env={"CAROL_KEY": KEYS["carol"]},
                        extra_args=["--set", f"save_stream_file={flows}"])
    chat(gw, KEYS["bob"]).parse()
    chat(gw, KEYS["alice"])
    with pytest.raises(openai.AuthenticationError):
        chat(gw, "sk-gw-wrong-key")
    gateways.stop(gw)
    recorded = read_flows(flows)
    assert len(recorded) == 3
    assert not any(k in str(f.get_state()) for f in recorded for k in (KEYS["bob"], KEYS["alice"], "sk-gw-wrong-key"))
    assert [f.comment.split(" · ")[0] for f in recorded][:2] == ["bob", "alice"]  # mitmweb's comment names them
    again = gateways.start(accounts, clients=str(path), state_file=str(state), env={"CAROL_KEY": KEYS["carol"]})
    with pytest.raises(openai.RateLimitError) as err:
        chat(again, KEYS["bob"])
    assert err.value.code == "insufficient_quota"
    # one of alice's two requests this minute was before the restart
    assert chat(again, KEYS["alice"]).headers["x-ratelimit-remaining-requests"] == "0"
    assert sha(KEYS["bob"]) in state.read_text() and KEYS["bob"] not in state.read_text()
