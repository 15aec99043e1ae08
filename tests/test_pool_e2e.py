"""Account pool, retries and rotation through a real mitmdump, driven by the official openai SDK.

Every gateway here talks to the shared upstream emulator; faults come from emulator rules.
Keys, refresh tokens and client secrets carry a per-session random salt so the final test can
grep every log, header and body for them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from mitmproxy.io import FlowReader

from tests.conftest import Emulator, Gateway, GatewayFactory, wait_for

pytestmark = pytest.mark.e2e

SALT = secrets.token_hex(6)
SECRETS: set[str] = set()  # every credential handed to a gateway in this module
SEEN_TEXT: list[str] = []  # headers and bodies the clients received, checked at the end
STARTED: list[Gateway] = []
FLASH = "gemini-2.5-flash"
PROBE = '''
from mitmproxy import ctx, http

class Probe:
    """Test helper: GET /__probe/<command> runs a mitmproxy command and returns its output."""

    def request(self, flow):
        if flow.request.path.startswith("/__probe/"):
            out = ctx.master.commands.execute(flow.request.path[len("/__probe/"):])
            flow.response = http.Response.make(200, str(out).encode(), {"content-type": "text/plain"})

addons = [Probe()]
'''


# ---- helpers ---------------------------------------------------------------------------------

def key(name: str, bad: bool = False) -> str:
    """An API key; the emulator answers keys starting with `bad` with 401."""
    value = f"{'bad' if bad else 'AIzaSy'}-{name}-{SALT}"
    SECRETS.add(value)
    return value


def email(name: str) -> str:
    return f"{name}@example.com"


def gemini(emu: Emulator, name: str, *, bad: bool = False, models: list[str] | None = None) -> str:
    return f"""
  - provider: gemini
    email: {email(name)}
    api_key: {key(name, bad)}
    base_url: {emu.url}""" + (f"\n    models: {json.dumps(models)}" if models else "")


def cloudcode(emu: Emulator, name: str, *, revoked: bool = False, models: list[str] | None = None) -> str:
    refresh, client_secret = f"{'revoked' if revoked else '1//rt'}-{name}-{SALT}", f"GOCSPX-{name}-{SALT}"
    SECRETS.update((refresh, client_secret))
    return f"""
  - provider: cloudcode
    email: {email(name)}
    refresh_token: {refresh}
    client_id: {name}.apps.googleusercontent.com
    client_secret: {client_secret}
    project: project-{name}
    token_url: {emu.url}/token
    base_url: {emu.url}""" + (f"\n    models: {json.dumps(models)}" if models else "")


def refresh_token(name: str, revoked: bool = False) -> str:
    return f"{'revoked' if revoked else '1//rt'}-{name}-{SALT}"


def openai_account(emu: Emulator, name: str, models: list[str] | None = None) -> str:
    api_key = f"sk-{name}-{SALT}"
    SECRETS.add(api_key)
    return f"""
  - provider: openai
    label: {name}
    base_url: {emu.url}/openai/v1
    api_key: {api_key}""" + (f"\n    models: {json.dumps(models)}" if models else "")


def accounts(*rows: str, sticky: bool = False) -> str:
    return f"sticky: {str(sticky).lower()}\naccounts:" + "".join(rows) + "\n"


def start(gateways: GatewayFactory, yaml_text: str, **kw: Any) -> Gateway:
    gw = gateways.start(yaml_text, **kw)
    STARTED.append(gw)
    return gw


def ask(gw: Gateway, text: str = "hello", model: str = FLASH, **kw: Any) -> tuple[httpx.Headers, Any]:
    raw = gw.openai().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw)
    SEEN_TEXT.append(str(raw.headers) + raw.text)
    return raw.headers, raw.parse()


def api_error(fn: Callable[[], Any], kind: type[openai.APIStatusError]) -> openai.APIStatusError:
    with pytest.raises(kind) as exc:
        fn()
    resp = exc.value.response
    SEEN_TEXT.append(str(resp.headers) + resp.text)
    return exc.value



def keys_used(emu: Emulator, path: str = "/v1beta/") -> list[str]:
    return [e["key"] for e in emu.log() if path in e["path"]]


def state(gw: Gateway) -> dict[str, Any]:
    try:
        return json.loads((gw.workdir / "state.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def disabled_reason(gw: Gateway, name: str) -> str | None:
    return state(gw).get("accounts", {}).get(email(name), {}).get("disabled_reason")


def read_flows(path: Path) -> list[Any]:
    with open(path, "rb") as f:
        return [fl for fl in FlowReader(f).stream() if "/chat/completions" in fl.request.path]


# ---- rotation --------------------------------------------------------------------------------

def test_rate_limited_keys_rotate_until_one_answers(gateways: GatewayFactory, emulator: Emulator,
                                                    tmp_path: Path) -> None:
    flows = tmp_path / "flows.mitm"
    gw = start(gateways, accounts(*(gemini(emulator, f"rot{i}") for i in range(6))),
               extra_args=["--set", f"save_stream_file={flows}"])

    # 1. non-streaming: the first two upstream attempts are rate-limited, whichever keys they use
    emulator.rules({"times": 2, "status": 429, "retry_delay": "30s"})
    headers, completion = ask(gw, "first")
    used = keys_used(emulator)
    assert len(used) == 3 == len(set(used))
    names = [u.split("-")[1] for u in used]
    assert headers["x-account-email"] == email(names[2])
    assert completion.choices[0].message.content == f"Echo({FLASH}): first"

    # 2. streaming after two more 429s (on keys that are still ready) still arrives chunk by chunk
    emulator.reset()
    emulator.rules({"times": 2, "status": 429, "retry_delay": "30s"},
                   {"chunk_delay_ms": 200, "reply": {"chunks": ["one ", "two ", "three ", "four"]}})
    client = gw.openai()
    raw = client.chat.completions.with_raw_response.create(
        model=FLASH, messages=[{"role": "user", "content": "second"}], stream=True)
    arrivals, text = [], ""
    for chunk in raw.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
    used2 = keys_used(emulator)
    assert len(used2) == 3 and not set(used2) & set(used[:2])  # cooled keys were not tried again
    assert raw.headers["x-account-email"] == email(used2[2].split("-")[1])
    assert text == "one two three four"
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(arrivals) == 4 and all(g > 0.12 for g in gaps), gaps  # not buffered into one piece

    # 3. mitmweb's story of each flow: every attempt, in order
    gateways.stop(gw)
    saved = read_flows(flows)
    assert len(saved) == 2
    for flow, keys in zip(saved, (used, used2), strict=False):
        who = [email(k.split("-")[1]) for k in keys]
        assert flow.request.path == "/v1/chat/completions" and flow.request.method == "POST"
        assert f"{who[0]}:429, {who[1]}:429, {who[2]}:200" in flow.comment, flow.comment
        assert flow.marked == ":arrows_counterclockwise:"  # answered, after rotating: flagged in mitmweb
        assert flow.comment.startswith("rotated · ") and f" · {who[2]} · " in flow.comment


def test_all_keys_rate_limited_is_an_openai_429_with_the_shortest_wait(gateways: GatewayFactory,
                                                                        emulator: Emulator) -> None:
    gw = start(gateways, accounts(gemini(emulator, "rl1"), gemini(emulator, "rl2")))
    emulator.rules({"match": {"key": key("rl1")}, "status": 429, "retry_delay": "7s"},
                   {"match": {"key": key("rl2")}, "status": 429, "retry_delay": "3s"})
    err = api_error(lambda: ask(gw), openai.RateLimitError)
    assert err.status_code == 429 and err.response.headers["retry-after"] == "3"
    body = err.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "rate_limit_error"
    assert err.code == "rate_limit_exceeded"
    assert len(emulator.log()) == 2

    # while both cool, the gateway answers at once without calling the upstream
    err = api_error(lambda: ask(gw), openai.RateLimitError)
    assert err.response.headers["retry-after"] in ("3", "2") and err.code == "rate_limit_exceeded"
    assert len(emulator.log()) == 2


def test_a_cooled_key_waits_for_its_time(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = start(gateways, accounts(gemini(emulator, "cool1"), gemini(emulator, "cool2")))
    emulator.rules({"times": 1, "status": 429, "retry_delay": "1s"})
    ask(gw, "one")
    cooled, other = keys_used(emulator)
    cooled_at = time.monotonic()
    emulator.reset()
    for _ in range(3):
        headers, _ = ask(gw, "two")
    assert set(keys_used(emulator)) == {other}  # not retried before its time
    assert time.monotonic() - cooled_at < 1.0

    def used_again() -> bool:
        ask(gw, "three")
        return cooled in keys_used(emulator)

    wait_for(used_again, timeout=5, interval=0.1, what="the cooled key to be used again")
    assert time.monotonic() - cooled_at >= 0.95


def test_bad_credentials_disable_the_account_and_the_request_succeeds(gateways: GatewayFactory,
                                                                      emulator: Emulator, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    gw = start(gateways, accounts(gemini(emulator, "revoked401", bad=True), gemini(emulator, "forbidden403"),
                                  gemini(emulator, "good")), extra_args=["-s", str(probe)])
    emulator.rules({"match": {"key": key("forbidden403")}, "status": 403})

    def both_disabled() -> bool:
        headers, _ = ask(gw)
        assert headers["x-account-email"] == email("good")  # every request succeeds
        used = set(keys_used(emulator))
        return {key("revoked401", bad=True), key("forbidden403")} <= used

    wait_for(both_disabled, timeout=10, interval=0, what="both bad accounts to be tried")
    reasons = wait_for(lambda: (disabled_reason(gw, "revoked401"), disabled_reason(gw, "forbidden403"))
                       if disabled_reason(gw, "forbidden403") and disabled_reason(gw, "revoked401") else None,
                       timeout=5, what="the state file to record the disabled accounts")
    assert reasons[0].startswith("401: API key not valid") and reasons[1].startswith("403: ")

    emulator.reset()
    for _ in range(4):
        assert ask(gw)[0]["x-account-email"] == email("good")
    assert set(keys_used(emulator)) == {key("good")}

    # the pool as the gateway.accounts command shows it: reasons, no secrets
    out = httpx.get(gw.url + "/__probe/gateway.accounts").text
    SEEN_TEXT.append(out)
    lines = {ln.split(" ")[0]: ln for ln in out.splitlines()}
    assert "disabled: 401: API key not valid" in lines[email("revoked401")]
    assert "disabled: 403: " in lines[email("forbidden403")]
    assert "ready last=200" in lines[email("good")]
    assert "gateway accounts:\n" in wait_for(gw.log, what="the command output in the log")

    # an upstream error that echoes a credential is redacted before it reaches the client
    emulator.rules({"times": 1, "status": 400, "message": f"key {key('good')} may not use this model"})
    err = api_error(lambda: ask(gw), openai.BadRequestError)
    assert "[redacted] may not use this model" in err.message and key("good") not in err.response.text


@pytest.fixture(scope="module")
def five(gateways: GatewayFactory, emulator_proc: Emulator) -> Gateway:
    return start(gateways, accounts(*(gemini(emulator_proc, f"five{i}") for i in range(5))))


def test_an_upstream_400_is_returned_at_once(five: Gateway, emulator: Emulator) -> None:
    emulator.rules({"times": 1, "status": 400, "message": "* GenerateContentRequest.contents: bad part"})
    err = api_error(lambda: ask(five), openai.BadRequestError)
    assert err.status_code == 400 and "bad part" in err.message
    assert err.response.json()["error"]["type"] == "invalid_request_error"
    assert len(emulator.log()) == 1  # no rotation: another key would get the same answer
    assert ask(five)[1].choices[0].message.content.startswith("Echo(")  # and nobody was cooled or disabled


def test_at_most_three_attempts_even_with_five_accounts(five: Gateway, emulator: Emulator) -> None:
    emulator.rules({"status": 503})
    err = api_error(lambda: ask(five), openai.InternalServerError)
    assert err.status_code == 503 and err.response.json()["error"]["code"] == "upstream_error"
    used = keys_used(emulator)
    assert len(used) == 3 == len(set(used))


# ---- Cloud Code ------------------------------------------------------------------------------

@pytest.fixture
def emulator_config(emulator: Emulator):
    """Token TTL / refresh delay changes, restored afterwards (the emulator is shared)."""
    yield lambda **kw: emulator.control("config", kw)
    emulator.control("config", {"token_ttl": 3600, "refresh_delay_ms": 0})


async def test_cloudcode_refreshes_once_under_concurrency_and_again_after_expiry(
        gateways: GatewayFactory, emulator: Emulator, emulator_config) -> None:
    gw = start(gateways, accounts(cloudcode(emulator, "cc")))
    emulator_config(refresh_delay_ms=300)
    rt = refresh_token("cc")
    client = gw.async_openai()

    async def one(i: int, **kw: Any) -> Any:
        raw = await client.chat.completions.with_raw_response.create(
            model=FLASH, messages=[{"role": "user", "content": f"q{i}"}], **kw)
        SEEN_TEXT.append(str(raw.headers) + raw.text)
        assert raw.headers["x-account-email"] == email("cc")
        return raw.parse()

    results = await asyncio.gather(*(one(i) for i in range(10)))
    assert [r.choices[0].message.content for r in results] == [f"Echo({FLASH}): q{i}" for i in range(10)]
    assert emulator.control("stats")["refreshes"] == {rt: 1}
    calls = [e for e in emulator.log() if e["path"].startswith("/v1internal")]
    assert len(calls) == 10 and len({e["key"] for e in calls}) == 1
    assert calls[0]["body"]["project"] == "project-cc" and calls[0]["body"]["model"] == FLASH
    token = calls[0]["key"]
    SECRETS.add(token)

    # streaming with the cached token
    stream = await client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "s"}],
                                                  stream=True)
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == f"Echo({FLASH}): s"
    assert emulator.control("stats")["refreshes"] == {rt: 1}

    # the upstream stops accepting the token before its announced expiry: a 401 with a stale
    # token refreshes (once, even for concurrent requests) and the same account keeps working
    emulator.control("expire_tokens", {})
    results = await asyncio.gather(*(one(i) for i in range(5)))
    assert len(results) == 5
    assert emulator.control("stats")["refreshes"] == {rt: 2}
    emulator.control("expire_tokens", {})
    stream = await client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "s2"}],
                                                  stream=True)
    assert "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices]).endswith("s2")
    assert emulator.control("stats")["refreshes"] == {rt: 3}
    SECRETS.update(e["key"] for e in emulator.log() if e["path"].startswith("/v1internal"))
    await asyncio.sleep(1.2)  # let the state file flush
    assert disabled_reason(gw, "cc") is None
    assert state(gw)["accounts"][email("cc")]["last_status"] == 200


def test_revoked_refresh_token_disables_the_account(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = start(gateways, accounts(cloudcode(emulator, "ccrevoked", revoked=True), gemini(emulator, "backup")))

    def refresh_tried() -> bool:
        headers, _ = ask(gw)
        assert headers["x-account-email"] == email("backup")
        return bool(emulator.control("stats")["refreshes"])

    wait_for(refresh_tried, timeout=10, interval=0, what="the revoked account to be tried")
    reason = wait_for(lambda: disabled_reason(gw, "ccrevoked"), timeout=5, what="the disabled flag")
    assert "invalid_grant" in reason and reason.startswith("401")
    for _ in range(4):
        assert ask(gw)[0]["x-account-email"] == email("backup")
    assert emulator.control("stats")["refreshes"] == {refresh_token("ccrevoked", revoked=True): 1}
    assert not [e for e in emulator.log() if e["path"].startswith("/v1internal")]


# ---- several providers in one file -----------------------------------------------------------

MIXED_MAPPINGS = """
default: gemini-2.5-flash
mappings:
  fast: gemini-2.5-flash
  smart: gemini-2.5-pro
  local: emulator-echo
  "gpt-4o*": ~
  "gemini-*": ~
"""


@pytest.fixture(scope="module")
def mixed(gateways: GatewayFactory, emulator_proc: Emulator) -> Gateway:
    emu = emulator_proc
    return start(gateways, accounts(gemini(emu, "gem", models=["gemini-2.5-flash*"]),
                                    cloudcode(emu, "code", models=["gemini-2.5-pro"]),
                                    openai_account(emu, "compat", models=["gpt-4o*", "emulator-echo"])),
                 mappings_yaml=MIXED_MAPPINGS)


@pytest.mark.parametrize("client_model, mapped, account, path", [
    ("fast", "gemini-2.5-flash", email("gem"), "/v1beta/models/gemini-2.5-flash:generateContent"),
    ("smart", "gemini-2.5-pro", email("code"), "/v1internal:generateContent"),
    ("local", "emulator-echo", "compat", "/openai/v1/chat/completions"),
    ("gpt-4o-mini", "gpt-4o-mini", "compat", "/openai/v1/chat/completions"),
])
def test_models_restrictions_route_each_model(mixed: Gateway, emulator: Emulator, client_model: str,
                                              mapped: str, account: str, path: str) -> None:
    for i in range(3):
        headers, completion = ask(mixed, f"route {i}", model=client_model)
        assert headers["x-account-email"] == account and headers["x-mapped-model"] == mapped
        assert completion.choices[0].message.content == f"Echo({mapped}): route {i}"
    assert [e["path"] for e in emulator.log() if e["path"] != "/token"] == [path] * 3


def test_a_model_no_account_serves_is_a_clear_503(mixed: Gateway, emulator: Emulator) -> None:
    err = api_error(lambda: ask(mixed, model="gemini-3-pro-preview"), openai.InternalServerError)
    assert err.status_code == 503 and err.code == "no_account_available"
    assert "gemini-3-pro-preview" in err.message and not emulator.log()


def test_openai_upstream_chat_and_stream_with_usage(mixed: Gateway, emulator: Emulator) -> None:
    headers, completion = ask(mixed, "plain", model="local")
    assert completion.choices[0].message.content == "Echo(emulator-echo): plain"
    assert completion.usage.prompt_tokens == 1 and completion.usage.completion_tokens == 2
    sent = emulator.log()[-1]
    assert sent["key"] == f"sk-compat-{SALT}" and sent["body"]["model"] == "emulator-echo"

    raw = mixed.openai().chat.completions.with_raw_response.create(
        model="local", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["x-account-email"] == "compat"
    chunks = list(raw.parse())
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo(emulator-echo): one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert all(c.usage is None for c in chunks[:-1])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_upstream_tool_calls(mixed: Gateway, emulator: Emulator) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                               "parameters": {"type": "object", "properties": {
                                                   "city": {"type": "string"}}, "required": ["city"]}}}]
    prompt = 'Weather? [[tool:get_weather {"city": "Paris"}]]'
    _, completion = ask(mixed, prompt, model="local", tools=tools)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert emulator.log()[-1]["body"]["tools"][0]["function"]["name"] == "get_weather"

    # the answer to the tool call goes back upstream in OpenAI's shape
    follow = mixed.openai().chat.completions.create(model="local", tools=tools, messages=[
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}])
    assert follow.choices[0].message.content == 'Tool get_weather returned: {"temp":21}'

    stream = mixed.openai().chat.completions.create(model="local", tools=tools, stream=True,
                                                    messages=[{"role": "user", "content": prompt}])
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        deltas = (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []
        for tc in deltas:
            acc = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            acc["id"] += tc.id or ""
            if tc.function:
                acc["name"] += tc.function.name or ""
                acc["arguments"] += tc.function.arguments or ""
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert list(calls) == [0] and calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"} and finish == "tool_calls"


def test_cloudcode_chat_and_stream(mixed: Gateway, emulator: Emulator) -> None:
    headers, completion = ask(mixed, "cc plain", model="smart")
    assert headers["x-account-email"] == email("code")
    assert completion.choices[0].message.content == "Echo(gemini-2.5-pro): cc plain"
    stream = mixed.openai().chat.completions.create(model="smart", stream=True,
                                                    messages=[{"role": "user", "content": "cc stream"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
        "Echo(gemini-2.5-pro): cc stream"
    SECRETS.update(e["key"] for e in emulator.log() if e["path"].startswith("/v1internal"))


def test_client_disconnect_mid_stream_cancels_the_upstream(mixed: Gateway, emulator: Emulator) -> None:
    emulator.rules({"match": {"model": FLASH}, "times": 1, "chunk_delay_ms": 1000,
                    "reply": {"chunks": ["a ", "b ", "c ", "d ", "e ", "f"]}})
    body = {"model": "fast", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    with httpx.stream("POST", mixed.v1 + "/chat/completions", json=body, timeout=10) as resp:
        assert resp.status_code == 200 and resp.headers["x-account-email"] == email("gem")
        got = b""
        for chunk in resp.iter_raw():
            got += chunk
            if b'"a "' in got:
                break
    closed = time.monotonic()
    # the emulator's stream handler sees the gateway close the upstream connection at its next write
    wait_for(lambda: emulator.control("stats")["aborted_streams"] == 1, timeout=4, what="the upstream to see it")
    assert time.monotonic() - closed < 2.5  # the whole stream would have taken 5 s more
    wait_for(lambda: "client went away mid-stream; upstream request cancelled" in mixed.log(), timeout=3,
             what="the cancellation in the gateway log")
    assert ask(mixed, "after", model="fast")[1].choices[0].message.content == f"Echo({FLASH}): after"


# ---- the accounts file at runtime ------------------------------------------------------------

def test_accounts_file_reloads_without_restart(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = start(gateways, accounts(gemini(emulator, "first")))
    assert ask(gw)[0]["x-account-email"] == email("first")
    with gw.accounts_path.open("a") as f:
        f.write(gemini(emulator, "second") + "\n")
    edited = time.monotonic()
    wait_for(lambda: ask(gw)[0]["x-account-email"] == email("second"), timeout=5, interval=0.1,
             what="the new account to be used")
    assert time.monotonic() - edited < 3.5
    assert "reloaded" in gw.log() and "second@example.com (gemini)" in gw.log()

    # a broken edit keeps the last good file, says why, and never echoes the file's content
    good = gw.accounts_path.read_text()
    gw.accounts_path.write_text(good + f"  - provider: gemini\n    email: third\n    api_key: {key('third')}\n"
                                       f"    wieght: 2\n")
    # files are looked at when requests come (at most once a second), not by a background poll
    wait_for(lambda: ask(gw) and "keeping the previous accounts.yaml" in gw.log(), timeout=5,
             what="the reload warning")
    assert {ask(gw)[0]["x-account-email"] for _ in range(4)} == {email("first"), email("second")}


def test_state_survives_a_restart(gateways: GatewayFactory, emulator: Emulator, tmp_path: Path) -> None:
    state_file = tmp_path / "persisted.json"
    yaml_text = accounts(gemini(emulator, "gone", bad=True), gemini(emulator, "stays"))
    gw = start(gateways, yaml_text, state_file=state_file)
    wait_for(lambda: ask(gw)[0] and key("gone", bad=True) in keys_used(emulator), timeout=10, interval=0,
             what="the bad key to be tried")
    gateways.stop(gw)  # a clean stop writes the state
    saved = json.loads(state_file.read_text())
    assert saved["accounts"][email("gone")]["disabled_reason"].startswith("401")
    text = state_file.read_text()
    assert key("gone", bad=True) not in text and key("stays") not in text

    emulator.reset()
    gw2 = start(gateways, yaml_text, state_file=state_file)
    for _ in range(4):
        assert ask(gw2)[0]["x-account-email"] == email("stays")
    assert set(keys_used(emulator)) == {key("stays")}


# ---- secrets ---------------------------------------------------------------------------------

def test_no_secret_in_any_log_header_or_body() -> None:
    """Runs last: every gateway of this module, every response its clients saw."""
    assert STARTED and len(SECRETS) > 10
    texts = [(f"log of {gw.workdir.name}", gw.log()) for gw in STARTED]
    texts += [("client-visible text", t) for t in SEEN_TEXT]
    for where, text in texts:
        leaked = [s for s in SECRETS if s in text]
        assert not leaked, f"{where} contains {leaked}"
        assert "ya29." not in text, where  # no OAuth access token either
