"""Story, its log line and the metrics it feeds, without mitmproxy: outcomes and marks, logfmt
quoting of client-chosen text, bounded labels, the pool gauges, and the Grafana dashboard's
queries naming only metrics the gateway exports."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from addon.pool.pool import AccountPool
from addon.pool.accounts_file import parse_accounts
from addon.ops.metrics import LabelBudget, Metrics
from addon.pool.policy import Attempt
from addon.ops.story import MARKS, Story
from tests.test_operator_e2e import parse_logfmt

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json"


def pool() -> AccountPool:
    p = AccountPool()
    p.update(parse_accounts({"accounts": [
        {"provider": "gemini", "email": "a@x", "api_key": "AIza-unit-a"},
        {"provider": "gemini", "email": "b@x", "api_key": "AIza-unit-b", "disabled": True}]}))
    return p


def done(**kw) -> Story:
    s = Story(route="/v1/chat/completions", method="POST", client_model="gpt-4o", mapped_model="gemini-2.5-flash",
              **kw)
    s.ended = s.first_byte = s.started + 0.25
    return s


def test_outcomes_and_marks_tell_failures_apart() -> None:
    assert done(status=200, attempts=[Attempt("a", 200)]).outcome() == "ok"
    assert done(status=200, attempts=[Attempt("a", 429), Attempt("b", 200)]).outcome() == "rotated"
    failed = done(status=429, attempts=[Attempt("a", 429)], error_code="rate_limit_exceeded")
    assert failed.outcome() == "upstream_failed"
    # the same status, produced by the gateway without asking any upstream
    assert done(status=429, error_code="rate_limit_exceeded").outcome() == "refused"
    assert done(status=200, attempts=[Attempt("a", 200)], stream_error="502 boom").outcome() == "stream_cut"
    assert done(status=200, client_gone=True).outcome() == "client_gone"
    assert done(status=500, error_code="internal_error").outcome() == "internal_error"
    assert len(set(MARKS.values())) == len(MARKS)  # every outcome looks different in mitmweb


def test_log_line_quotes_client_text_and_round_trips() -> None:
    s = done(status=200, attempts=[Attempt("a@x", 200)], stream=True, tokens_in=3, tokens_out=5)
    s.client_model = 'evil model"\nmethod=GET'
    line = s.log_line()
    assert "\n" not in line
    fields = parse_logfmt(line)
    assert fields["client_model"] == 'evil model"\nmethod=GET' and fields["method"] == "POST"
    assert fields["latency_ms"] == "250" and fields["tokens_out"] == "5" and fields["stream"] == "true"
    assert json.loads(s.log_line("json"))["client_model"] == s.client_model
    s.client_model = "x" * 500
    assert len(parse_logfmt(s.log_line())["client_model"]) < 120  # capped


def test_label_budget_keeps_known_names_and_buckets_the_rest() -> None:
    budget = LabelBudget(limit=2)
    assert [budget(n, known=False) for n in ("a", "b", "c", "a")] == ["a", "b", "other", "a"]
    assert budget("gpt-4o", known=True) == "gpt-4o"


def scrape(m: Metrics) -> dict[str, list]:
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def test_observe_counts_and_the_pool_is_read_at_scrape_time() -> None:
    p = pool()
    m = Metrics(p, known_model=lambda n: n == "gpt-4o")
    m.stream_opened()
    m.observe(done(status=200, stream=True, attempts=[Attempt("a@x", 503, 0.1), Attempt("a@x", 200, 0.2)],
                   tokens_in=3, tokens_out=5))
    samples = scrape(m)
    [req] = samples["gateway_requests_total"]
    assert req.labels["outcome"] == "rotated" and req.value == 1
    assert samples["gateway_open_streams"][0].value == 0
    assert sum(s.value for s in samples["gateway_rotations_total"]) == 1
    assert {s.labels["direction"]: s.value for s in samples["gateway_tokens_total"]} == {"in": 3, "out": 5}
    assert {s.labels["account"]: s.value for s in samples["gateway_account_disabled"]} == {"a@x": 0, "b@x": 1}
    p.cool_down(p.accounts[0], 429, 30)
    [cooling] = [s for s in scrape(m)["gateway_account_cooldown_seconds"] if s.labels["account"] == "a@x"]
    assert 29 < cooling.value <= 30
    p.cool_down(p.accounts[0], 429, 3600, model="gemini-2.5-pro", why="daily quota")
    [resting] = scrape(m)["gateway_model_cooldown_seconds"]
    assert resting.labels == {"account": "a@x", "provider": resting.labels["provider"], "model": "gemini-2.5-pro",
                              "why": "daily quota"} and 3599 < resting.value <= 3600
    assert not any(n.endswith("_created") for n in samples)


def test_grafana_dashboard_queries_only_exported_metrics() -> None:
    m = Metrics(pool())
    m.stream_opened()
    m.observe(done(status=200, stream=True, attempts=[Attempt("a@x", 503), Attempt("a@x", 200)], tokens_in=1,
                   tokens_out=1))  # every labelled series has a sample
    exported = set(scrape(m))
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bgateway_\w+", e)}
    assert used and used <= exported, used - exported
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dash["panels"])


def test_story_times() -> None:
    s = Story()
    assert s.latency is None and s.ttfb is None
    s.first_byte, s.ended = s.started + 0.1, s.started + 0.3
    assert abs(s.ttfb - 0.1) < 1e-9 and abs(s.latency - 0.3) < 1e-9 and s.started <= time.monotonic()
