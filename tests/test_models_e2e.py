"""Models as Google serves them, through a real mitmdump against the emulator: the shipped
mappings answer from current models, and an answer Google re-routed to another model says so in
the log line, the mitmweb story and /metrics."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Emulator, Gateway, GatewayFactory, gemini_accounts, wait_for
from tests.test_operator_e2e import read_flows, request_lines, scrape, value

pytestmark = pytest.mark.e2e

OPENAI_NAMES = ("gpt-4o", "gpt-4.1", "gpt-5", "gpt-5-mini", "gpt-5-codex", "o3", "o4-mini")


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def listed_by_google(emulator: Emulator) -> set[str]:
    r = httpx.get(emulator.url + "/v1beta/models", params={"pageSize": 1000}, headers={"x-goog-api-key": "lister"})
    return {m["baseModelId"] for m in r.json()["models"]}


def test_openai_names_answer_from_models_google_lists_as_current(gateway: Gateway, emulator: Emulator) -> None:
    current = listed_by_google(emulator)
    client = gateway.openai()
    for name in OPENAI_NAMES:
        for stream in (False, True):
            raw = client.chat.completions.with_raw_response.create(model=name, messages=user(f"hi {name}"),
                                                                   stream=stream)
            mapped = raw.headers["x-mapped-model"]
            assert mapped in current, (name, mapped)
            if stream:
                assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
            else:
                assert raw.parse().model == name
            call = [e for e in emulator.log() if e["path"].startswith("/v1beta/models/")][-1]
            assert call["path"].startswith(f"/v1beta/models/{mapped}:")
    # none of them was re-routed by Google: no line says so
    lines = [ln for ln in request_lines(gateway) if ln.get("client_model") in OPENAI_NAMES]
    assert len(lines) >= 2 * len(OPENAI_NAMES) and not any("served_model" in ln for ln in lines)


def test_a_rerouted_name_is_told_in_log_story_and_metrics(gateways: GatewayFactory, emulator: Emulator,
                                                          tmp_path: Path) -> None:
    flows_file = tmp_path / "flows.mitm"
    gw = gateways.start(gemini_accounts(emulator.url, "rerouted"), auth_mode="strict", api_key="gw-key",
                        extra_args=["--set", f"save_stream_file={flows_file}"])
    client = gw.openai(api_key="gw-key")
    # gemini-2.5-pro passes through the shipped "gemini-*": ~ and Google answers it from 3.8 Flash
    raw = client.chat.completions.with_raw_response.create(model="gemini-2.5-pro", messages=user("old name"))
    assert raw.headers["x-mapped-model"] == "gemini-2.5-pro" and raw.parse().model == "gemini-2.5-pro"
    chunks = list(client.chat.completions.create(model="gemini-3.7-flash", messages=user("streamed"), stream=True))
    assert chunks
    # a stream's line is written when mitmproxy ends its flow, which may be just after the client's last byte
    lines = wait_for(lambda: (found := {ln["client_model"]: ln for ln in request_lines(gw) if ln.get("client_model")})
                     and "gemini-3.7-flash" in found and found, what="the streamed request's log line")
    assert lines["gemini-2.5-pro"]["served_model"] == "gemini-3.8-flash"
    assert lines["gemini-3.7-flash"]["served_model"] == "gemini-3.8-flash"
    samples = scrape(gw, "gw-key")
    assert value(samples, "gateway_rerouted_answers_total", mapped_model="gemini-2.5-pro",
                 served_model="gemini-3.8-flash") == 1
    assert value(samples, "gateway_rerouted_answers_total", mapped_model="gemini-3.7-flash") == 1
    gateways.stop(gw)
    plain, streamed = read_flows(flows_file)
    assert plain.comment.startswith("gemini-2.5-pro→gemini-2.5-pro · re-routed to gemini-3.8-flash · ")
    assert "re-routed to gemini-3.8-flash" in streamed.comment


def test_a_shut_down_name_is_the_upstreams_404(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "shutdown"), mappings_yaml='mappings:\n  "*": ~\n')
    r = httpx.post(gw.v1 + "/chat/completions", json={"model": "gemini-2.0-flash", "messages": user("x")}, timeout=20)
    assert r.status_code == 404, r.text
    assert "models/gemini-2.0-flash is not found for API version v1beta" in r.json()["error"]["message"]


# ---- fallback chains ---------------------------------------------------------------------------

DAILY_QUOTA = [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
    {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
     "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}]
CHAINS = """
default: gemini-3.8-flash
mappings:
  retired-first: [gemini-3-pro-preview, gemini-3.8-flash]
  strong: [{model: gemini-4-argon, thinking_level: high}, gemini-3.6-flash]
  to-local: [gemini-4-argon, local-echo]
"""


def generate_paths(emulator: Emulator, since: int = 0) -> list[str]:
    return [e["path"].split(":")[0].rsplit("/", 1)[-1] for e in emulator.log()[since:]
            if e["path"].startswith("/v1beta/models/") and ":" in e["path"]]


def test_a_chain_whose_first_model_is_shut_down_answers_from_the_second(gateways: GatewayFactory,
                                                                        emulator: Emulator, tmp_path: Path) -> None:
    flows_file = tmp_path / "flows.mitm"
    gw = gateways.start(gemini_accounts(emulator.url, "chain404"), mappings_yaml=CHAINS,
                        extra_args=["--set", f"save_stream_file={flows_file}"])
    since = len(emulator.log())
    raw = gw.openai().chat.completions.with_raw_response.create(model="retired-first", messages=user("hi"))
    assert raw.headers["x-mapped-model"] == "gemini-3.8-flash"
    assert raw.parse().model == "retired-first" and raw.parse().choices[0].message.content
    assert generate_paths(emulator, since) == ["gemini-3-pro-preview", "gemini-3.8-flash"]
    [line] = [ln for ln in request_lines(gw) if ln.get("client_model") == "retired-first"]
    assert line["mapped_model"] == "gemini-3.8-flash" and line["fallback_from"] == "gemini-3-pro-preview:not_found"
    gateways.stop(gw)
    [flow] = read_flows(flows_file)
    assert flow.comment.startswith("fallback from gemini-3-pro-preview:not_found · retired-first→gemini-3.8-flash")


def test_a_chain_whose_first_model_is_out_of_quota_answers_from_the_second(gateways: GatewayFactory,
                                                                           emulator: Emulator) -> None:
    accounts = gemini_accounts(emulator.url, "quota-a", "quota-b")
    gw = gateways.start(accounts, mappings_yaml=CHAINS, auth_mode="strict", api_key="gw-key")
    client = gw.openai(api_key="gw-key")
    emulator.rules({"match": {"model": "gemini-4-argon"}, "status": 429, "details": DAILY_QUOTA,
                    "message": "You exceeded your current quota.", "times": 4})
    since = len(emulator.log())
    raw = client.chat.completions.with_raw_response.create(model="strong", messages=user("first"))
    assert raw.headers["x-mapped-model"] == "gemini-3.6-flash", raw.text
    assert generate_paths(emulator, since) == ["gemini-4-argon", "gemini-4-argon", "gemini-3.6-flash"]
    # streamed: the resting model is not asked again, the second target answers at once
    raw = client.chat.completions.with_raw_response.create(model="strong", messages=user("second"), stream=True)
    assert raw.headers["x-mapped-model"] == "gemini-3.6-flash"
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == \
        "Echo(gemini-3.6-flash): second"
    client.chat.completions.create(model="strong", messages=user("third"))
    assert generate_paths(emulator, since).count("gemini-4-argon") == 2  # asked once per account, then rests
    lines = [ln for ln in request_lines(gw) if ln.get("client_model") == "strong"]
    assert [ln["fallback_from"] for ln in lines] == ["gemini-4-argon:resting"] * 3
    assert [ln["mapped_model"] for ln in lines] == ["gemini-3.6-flash"] * 3
    samples = scrape(gw, "gw-key")
    assert value(samples, "gateway_fallbacks_total", skipped_model="gemini-4-argon", reason="resting") == 3
    accounts_view = httpx.get(gw.url + "/gateway/accounts", headers={"authorization": "Bearer gw-key"}).json()
    assert all(row["models"]["gemini-4-argon"]["why"] == "daily quota" for row in accounts_view["data"])


def test_a_chain_may_end_on_an_openai_compatible_account(gateways: GatewayFactory, emulator: Emulator) -> None:
    accounts = f"""
accounts:
  - provider: gemini
    email: g@example.com
    api_key: chain-gemini
    base_url: {emulator.url}
    models: ["gemini-*"]
  - provider: openai
    label: local
    base_url: {emulator.url}/openai/v1
    api_key: sk-local
    models: ["local-*"]
"""
    gw = gateways.start(accounts, mappings_yaml=CHAINS)
    emulator.rules({"match": {"model": "gemini-4-argon"}, "status": 503, "times": 3})
    client = gw.openai()
    raw = client.chat.completions.with_raw_response.create(model="to-local", messages=user("local please"))
    assert raw.headers["x-mapped-model"] == "local-echo" and raw.headers["x-account-email"] == "local"
    assert raw.parse().choices[0].message.content == "Echo(local-echo): local please"
    # the Responses surface walks the same chain
    done = client.responses.create(model="to-local", input="again")
    assert done.output_text == "Echo(local-echo): again"


def test_the_readme_chain_example_runs_as_written(gateways: GatewayFactory, emulator: Emulator) -> None:
    from tests import readme

    example = readme.blocks()["mapping-example"].text
    gw = gateways.start(gemini_accounts(emulator.url, "readme-chain"), mappings_yaml=example)
    emulator.rules({"match": {"key": "readme-chain", "model": "gemini-4-argon"}, "status": 429,
                    "details": DAILY_QUOTA, "times": 1})
    since = len(emulator.log())
    raw = gw.openai().chat.completions.with_raw_response.create(model="gpt-5", messages=user("chain"))
    assert raw.headers["x-mapped-model"] == "gemini-3.1-pro-preview"
    calls = [e for e in emulator.log()[since:] if ":generateContent" in e["path"]]
    assert [generate_paths(emulator, since)] == [["gemini-4-argon", "gemini-3.1-pro-preview"]]
    assert calls[-1]["body"]["generationConfig"]["thinkingConfig"] == {"thinkingLevel": "high"}


# ---- what each account serves ------------------------------------------------------------------

def test_a_target_an_account_does_not_list_is_skipped_there_without_a_request(gateways: GatewayFactory,
                                                                             emulator: Emulator) -> None:
    accounts = f"""
accounts:
  - provider: openai
    label: local-lists
    base_url: {emulator.url}/openai/v1
    api_key: sk-lists
    models: ["local-*", "emulator-*"]
  - provider: gemini
    email: lists@example.com
    api_key: lists-gemini
    base_url: {emulator.url}
    models: ["gemini-*"]
"""
    mappings = "mappings:\n  try-local: [local-not-listed, gemini-3.8-flash]\n  echo: [emulator-echo, gemini-3.8-flash]\n"
    gw = gateways.start(accounts, mappings_yaml=mappings, check_models=True)
    deadline = time.monotonic() + 10
    while "local-not-listed" not in gw.log():  # the start-up warning, once the lists are in
        assert time.monotonic() < deadline, gw.log()[-2000:]
        time.sleep(0.1)
    [warning] = [ln for ln in gw.log().splitlines() if "does not serve" in ln]
    assert "account local-lists" in warning and "fallback chains move on to gemini-3.8-flash" in warning
    since = len(emulator.log())
    client = gw.openai()
    raw = client.chat.completions.with_raw_response.create(model="try-local", messages=user("listed?"))
    assert raw.headers["x-mapped-model"] == "gemini-3.8-flash"
    assert not [e for e in emulator.log()[since:] if e["path"].startswith("/openai/v1/chat")]  # not asked
    [line] = [ln for ln in request_lines(gw) if ln.get("client_model") == "try-local"]
    assert line["fallback_from"] == "local-not-listed:absent"
    # a listed one is asked
    assert client.chat.completions.with_raw_response.create(
        model="echo", messages=user("x")).headers["x-mapped-model"] == "emulator-echo"
    # /v1/models: what is servable (try-local still is, through its second target), and what upstreams list
    ids = {m.id for m in client.models.list().data}
    assert {"try-local", "echo", "emulator-echo", "gemini-3.8-flash", "gemini-4-argon"} <= ids
    assert "local-not-listed" not in ids


def test_a_model_an_account_404s_is_remembered_as_absent_there(gateways: GatewayFactory, emulator: Emulator) -> None:
    gw = gateways.start(gemini_accounts(emulator.url, "absent-a", "absent-b"),
                        mappings_yaml="mappings:\n  preview: [gemini-2.0-flash, gemini-3.6-flash]\n")
    since = len(emulator.log())
    client = gw.openai()
    for i in range(3):
        raw = client.chat.completions.with_raw_response.create(model="preview", messages=user(f"try {i}"))
        assert raw.headers["x-mapped-model"] == "gemini-3.6-flash"
    # each account was asked once (404: gemini-2.0-flash is shut down), then never again
    asked = [e["key"] for e in emulator.log()[since:] if "gemini-2.0-flash" in e["path"]]
    assert sorted(asked) == ["absent-a", "absent-b"]
    lines = [ln["fallback_from"] for ln in request_lines(gw) if ln.get("client_model") == "preview"]
    assert lines == ["gemini-2.0-flash:not_found", "gemini-2.0-flash:not_found", "gemini-2.0-flash:absent"]
