"""What an operator sees, end to end: one log line per request, GET /metrics, mitmweb's list.

One gateway with two accounts serves a scripted sequence: a plain answer, a stream, a request
that rotates away from a rate-limited account, one whose only ready account is rate-limited by
the upstream (an upstream failure), one refused by the gateway itself because every account is
cooling (no upstream call), and a burst of client-chosen model names. Then the log, /metrics
and the saved flows must each tell what every request did.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Emulator, Gateway, GatewayFactory

pytestmark = pytest.mark.e2e

GW_KEY = "gw-operator-secret-5d1b"
ALICE_KEY, BOB_KEY = "AIzaAliceSecret-77c1", "AIzaBobSecret-91e4"
ACCOUNTS = f"""
accounts:
  - provider: gemini
    email: alice@example.com
    api_key: {ALICE_KEY}
    base_url: {{url}}
  - provider: gemini
    email: bob@example.com
    api_key: {BOB_KEY}
    base_url: {{url}}
"""
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


def parse_logfmt(line: str) -> dict[str, str]:
    return {k: json.loads(v) if v.startswith('"') else v for k, v in _PAIR.findall(line)}


def request_lines(gw: Gateway) -> list[dict[str, str]]:
    """The gateway's per-request lines from mitmdump's output ("[time] method=... route=...")."""
    return [parse_logfmt(line.split("] ", 1)[1]) for line in gw.log().splitlines()
            if "] method=" in line and " route=" in line]


def scrape(gw: Gateway, key: str | None = GW_KEY) -> dict[tuple[str, frozenset], float]:
    r = httpx.get(gw.url + "/metrics", headers={"authorization": f"Bearer {key}"} if key else {}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def read_flows(path: Path) -> list[Any]:
    from mitmproxy import io

    with path.open("rb") as f:
        return [fl for fl in io.FlowReader(f).stream() if "/chat/completions" in fl.request.path]


@pytest.fixture(scope="module")
def story(gateways: GatewayFactory, emulator_proc: Emulator, tmp_path_factory) -> dict[str, Any]:
    """Runs the scripted sequence once; the tests below read what it left behind."""
    emulator = emulator_proc
    emulator.reset()
    flows_file = tmp_path_factory.mktemp("operator") / "flows.mitm"
    gw = gateways.start(ACCOUNTS.format(url=emulator.url), auth_mode="strict", api_key=GW_KEY,
                        extra_args=["--set", f"save_stream_file={flows_file}"])
    client = gw.openai()
    msgs = [{"role": "user", "content": "count these four words"}]
    usages = [client.chat.completions.create(model="gpt-4o", messages=msgs).usage]  # 1. alice answers
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=msgs, stream=True,  # 2. bob streams
                                                 stream_options={"include_usage": True}))
    usages.append(chunks[-1].usage)
    emulator.rules({"match": {"key": ALICE_KEY}, "times": 1, "status": 429, "retry_delay": "60s"})
    usages.append(client.chat.completions.create(model="gpt-4o", messages=msgs).usage)  # 3. alice 429 -> bob
    emulator.rules({"match": {"key": BOB_KEY}, "times": 1, "status": 429, "retry_delay": "60s"})
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=msgs)  # 4. bob 429, alice cooling
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=msgs)  # 5. both cooling: the gateway says no
    during = scrape(gw)
    for i in range(25):  # 6. client-chosen names (refused at once: every account is cooling)
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model=f"made-up-{i}", messages=msgs)
    unauthorized = httpx.get(gw.url + "/metrics", timeout=10)
    wrong_key = httpx.post(gw.v1 + "/chat/completions", json={"model": "gpt-4o", "messages": msgs}, timeout=10,
                           headers={"authorization": "Bearer not-the-key"})  # refused on its headers
    after = scrape(gw)
    gateways.stop(gw)
    # what the client was told, which the log, the metrics and the flow list must repeat
    tokens = [(u.prompt_tokens, u.completion_tokens) for u in usages]
    return {"gw": gw, "tokens": tokens, "during": during, "after": after, "flows": read_flows(flows_file),
            "lines": request_lines(gw), "unauthorized": unauthorized, "wrong_key": wrong_key}


def test_one_log_line_per_request_tells_what_it_did(story: dict[str, Any]) -> None:
    lines = [ln for ln in story["lines"] if ln["route"] == "/v1/chat/completions"]
    assert len(lines) == 5 + 25 + 1
    assert story["wrong_key"].status_code == 401
    assert lines[-1] == {**lines[-1], "status": "401", "outcome": "refused", "error": "invalid_api_key"}
    plain, streamed, rotated, upstream_429, refused = lines[:5]
    for line, (tokens_in, tokens_out) in zip((plain, streamed, rotated), story["tokens"], strict=True):
        assert (line["tokens_in"], line["tokens_out"]) == (str(tokens_in), str(tokens_out))
    assert plain == {**plain, "method": "POST", "status": "200", "outcome": "ok", "client_model": "gpt-4o",
                     "mapped_model": "gemini-3.8-flash", "account": "alice@example.com",
                     "attempts": "alice@example.com:200", "stream": "false"}
    assert int(plain["latency_ms"]) >= 0 and plain["ttfb_ms"] == plain["latency_ms"]
    assert streamed == {**streamed, "status": "200", "outcome": "ok", "account": "bob@example.com", "stream": "true"}
    assert int(streamed["ttfb_ms"]) <= int(streamed["latency_ms"])
    assert rotated == {**rotated, "status": "200", "outcome": "rotated", "account": "bob@example.com",
                       "attempts": "alice@example.com:429,bob@example.com:200"}
    assert upstream_429 == {**upstream_429, "status": "429", "outcome": "upstream_failed",
                            "attempts": "bob@example.com:429", "error": "rate_limit_exceeded"}
    assert refused["status"] == "429" and refused["outcome"] == "refused" and "attempts" not in refused
    assert refused["error"] == "rate_limit_exceeded"
    # never a secret: not the gateway key, not an upstream key
    log = story["gw"].log()
    assert GW_KEY not in log and ALICE_KEY not in log and BOB_KEY not in log
    # and no chatter about the loopback relay hop, which reads like a second server
    assert "server connect" not in log and "Streaming response from" not in log and "Streaming request" not in log


def test_metrics_count_requests_attempts_rotations_tokens_and_the_pool(story: dict[str, Any]) -> None:
    m = story["during"]
    chat = {"route": "/v1/chat/completions"}
    assert value(m, "gateway_requests_total", **chat, outcome="ok", status="200", client_model="gpt-4o",
                 mapped_model="gemini-3.8-flash", account="alice@example.com") == 1
    assert value(m, "gateway_requests_total", **chat, outcome="ok", account="bob@example.com") == 1  # the stream
    assert value(m, "gateway_requests_total", **chat, outcome="rotated", status="200") == 1
    assert value(m, "gateway_requests_total", **chat, outcome="upstream_failed", status="429") == 1
    assert value(m, "gateway_requests_total", **chat, outcome="refused", status="429") == 1
    assert value(m, "gateway_upstream_attempts_total", account="alice@example.com", status="429") == 1
    assert value(m, "gateway_upstream_attempts_total", account="bob@example.com", status="200") == 2
    assert value(m, "gateway_upstream_latency_seconds_count", account="bob@example.com", status="429") == 1
    assert value(m, "gateway_rotations_total", mapped_model="gemini-3.8-flash") == 1
    tokens = story["tokens"]
    assert value(m, "gateway_tokens_total", direction="in") == sum(t[0] for t in tokens)
    assert value(m, "gateway_tokens_total", direction="out", account="bob@example.com") == tokens[1][1] + tokens[2][1]
    assert value(m, "gateway_time_to_first_byte_seconds_count", **chat, stream="true") == 1
    assert value(m, "gateway_request_duration_seconds_count", **chat, stream="false") == 4
    assert value(m, "gateway_open_streams") == 0
    # the pool at scrape time: on both accounts the model rests for about a minute after its 429
    # (quotas are per model; the accounts themselves stay ready), none disabled
    for who in ("alice@example.com", "bob@example.com"):
        assert value(m, "gateway_account_cooldown_seconds", account=who) == 0
        assert 30 < value(m, "gateway_model_cooldown_seconds", account=who, model="gemini-3.8-flash",
                          why="rate limit") <= 60
        assert value(m, "gateway_account_disabled", account=who) == 0


def test_metrics_bound_client_chosen_model_names_and_need_the_api_key(story: dict[str, Any]) -> None:
    m = story["after"]
    names = {dict(ls).get("client_model") for (n, ls) in m if n == "gateway_requests_total"}
    made_up = {n for n in names if n and n.startswith("made-up-")}
    assert len(made_up) == 20 and "other" in names  # the first 20 unknown names, then one bucket
    assert value(m, "gateway_requests_total", client_model="other") == 5
    assert story["unauthorized"].status_code == 401  # /metrics sits behind the API's auth


def test_mitmweb_list_tells_each_story_with_distinct_marks(story: dict[str, Any]) -> None:
    plain, streamed, rotated, upstream_429, refused = story["flows"][:5]
    (i1, o1), (i2, o2), (i3, o3) = story["tokens"]
    assert plain.comment == f"gpt-4o→gemini-3.8-flash · alice@example.com · {i1}+{o1} tok"
    assert streamed.comment == f"gpt-4o→gemini-3.8-flash · bob@example.com · {i2}+{o2} tok"
    assert rotated.comment == ("rotated · gpt-4o→gemini-3.8-flash · bob@example.com · "
                               f"alice@example.com:429, bob@example.com:200 · {i3}+{o3} tok")
    assert upstream_429.comment == "upstream 429 · gpt-4o→gemini-3.8-flash · bob@example.com"
    assert refused.comment == "refused 429 rate_limit_exceeded · gpt-4o→gemini-3.8-flash"
    marks = [f.marked for f in (plain, streamed, rotated, upstream_429, refused)]
    assert marks == ["", "", ":arrows_counterclockwise:", ":x:", ":no_entry:"]
